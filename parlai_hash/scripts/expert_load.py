"""``parlai expert_load``: tokens per expert of a trained sparse model (the paper's Figure 4).

    parlai expert_load -mf /tmp/hash/model -t wikitext103 --wikitext-dir DIR -dt valid

Runs the model over the split with teacher forcing and writes
``expert_load_<name>.csv`` (layer, expert, tokens, share, load_vs_mean) and
``expert_load_<name>.png`` (each expert's load over the mean, busiest first)
into the current folder or ``--outdir``. The work is done in
``parlai_hash.sweeps.expert_load``; ``parlai`` imports this module at every
start, so it imports nothing heavy at the top.
"""

from __future__ import annotations

from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script

from parlai_hash.errors import install_excepthook

install_excepthook()


@register_script('expert_load')
class ExpertLoadScript(ParlaiScript):
    @classmethod
    def setup_args(cls) -> ParlaiParser:
        from parlai.scripts.eval_model import setup_args

        parser = setup_args(ParlaiParser(True, True, 'Tokens per expert of a sparse model on a task.'))
        parser.set_defaults(datatype='valid')
        group = parser.add_argument_group('Expert load')
        group.add_argument('--outdir', type=str, default='.',
                           help='Folder for the CSV and PNG (default: the current folder).')
        group.add_argument('--load-name', type=str, default=None,
                           help='Name in the output files, expert_load_<name>.csv/png '
                           '(default: the model file\'s name, or its folder\'s when it is "model").')
        return parser

    def run(self) -> str:
        from pathlib import Path

        from parlai_hash.sweeps.expert_load import measure_expert_load, write_expert_load

        load = measure_expert_load(self.opt, max_examples=self.opt.get('num_examples', -1))
        paths = write_expert_load(load, Path(self.opt['outdir']), self.opt.get('load_name'))
        lines = [f"{load.examples} examples of {load.task} ({load.datatype})"]
        for layer, stats in load.summary().items():
            lines.append(f"{layer}: {len(load.layers[layer])} experts, busiest {stats['max']:.2f}x the mean, "
                         f"entropy {stats['entropy']:.3f} of the maximum, {int(stats['unused'])} unused")
        lines += [f"wrote {paths['csv']}", f"wrote {paths['png']}"]
        report = '\n'.join(lines)
        print(report)
        return report


if __name__ == '__main__':
    ExpertLoadScript.main()
