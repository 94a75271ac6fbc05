"""``parlai build_reddit``: build the pushshift.io Reddit shards ahead of training.

    parlai build_reddit --dump-dir /data/reddit --out /data/reddit_built

Builds what ``-t pushshift_reddit`` would build on first use (same options,
same default place under ``--datapath``), resumes an interrupted build, and
prints the stats table. The work is done in
``parlai_hash.tasks.pushshift_reddit.build``; ``parlai`` imports this module
at every start, so it imports nothing heavy at the top.
"""

from __future__ import annotations

from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script

from parlai_hash.errors import install_excepthook
from parlai_hash.tasks.pushshift_reddit.config import add_build_args

install_excepthook()


@register_script('build_reddit')
class BuildReddit(ParlaiScript):
    @classmethod
    def setup_args(cls) -> ParlaiParser:
        parser = ParlaiParser(
            True, False, description='Build (or resume) the pushshift.io Reddit dialogue shards.'
        )
        add_build_args(parser, script=True)
        return parser

    def run(self) -> str:
        from parlai_hash.tasks.pushshift_reddit.build import ensure_built
        from parlai_hash.tasks.pushshift_reddit.config import config_from_opt
        from parlai_hash.tasks.pushshift_reddit.stats import stats_table

        result = ensure_built(config_from_opt(self.opt))
        status = 'built' if result.built_now else 'already built'
        report = f'{status}: {result.build_dir}\n{stats_table(result.manifest.stats)}'
        print(report)
        return report


if __name__ == '__main__':
    BuildReddit.main()
