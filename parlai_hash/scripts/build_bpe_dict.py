"""``parlai build_bpe_dict``: the paper's ~8k byte-level BPE, trained on a task.

    parlai build_bpe_dict -t wikitext103 --bpe-vocab-size 8004 --out DIR

writes ``DIR/vocab.json`` and ``DIR/merges.txt``; train with
``--dict-tokenizer bytelevelbpe --bpe-vocab DIR/vocab.json --bpe-merge DIR/merges.txt``.
The work is in ``parlai_hash.dictionaries``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script

from parlai_hash.dictionaries import DEFAULT_BPE_MIN_FREQUENCY, DEFAULT_BPE_VOCAB_SIZE
from parlai_hash.errors import OptionError, install_excepthook

install_excepthook()


def setup_args() -> ParlaiParser:
    parser = ParlaiParser(True, False, 'Train a byte-level BPE dictionary on a task\'s text')
    group = parser.add_argument_group('Byte-level BPE')
    group.add_argument('--out', type=str, default=None,
                       help='Folder to write vocab.json and merges.txt into.')
    group.add_argument('--bpe-vocab-size', type=int, default=DEFAULT_BPE_VOCAB_SIZE,
                       help='Tokens in vocab.json: 256 bytes plus the merges (paper: ~8k).')
    group.add_argument('--bpe-min-frequency', type=int, default=DEFAULT_BPE_MIN_FREQUENCY,
                       help='A pair of symbols is merged only if it occurs this often.')
    parser.set_defaults(datatype='train')
    return parser


def check_out_folder(out: Optional[str]) -> None:
    """Refuse an ``--out`` that cannot become a folder, before the (long) training.

    An existing folder is fine: ``vocab.json`` and ``merges.txt`` in it are
    replaced, each atomically (``parlai_hash.dictionaries.save_bpe``).
    """
    if not out:
        return  # build_bpe_dict says --out is missing
    path = Path(out).expanduser()
    fix = 'pass a folder (new or existing) to write vocab.json and merges.txt into'
    if path.exists() and not path.is_dir():
        raise OptionError('--out', f'{out} is a file, not a folder', fix)
    existing = path
    while not existing.exists():  # the nearest part of the path that exists
        existing = existing.parent
    if not existing.is_dir():
        raise OptionError('--out', f'{existing} is a file, so the folder {out} cannot be made', fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError('--out', f'cannot write into {existing} (permission denied)', fix)


@register_script('build_bpe_dict', hidden=False)
class BuildBpeDict(ParlaiScript):
    """Train a byte-level BPE on one pass over a task's split (default: train)."""

    @classmethod
    def setup_args(cls) -> ParlaiParser:
        return setup_args()

    def run(self):
        from parlai_hash.dictionaries import build_bpe_dict

        check_out_folder(self.opt.get('out'))
        return build_bpe_dict(self.opt)


if __name__ == '__main__':
    BuildBpeDict.main()
