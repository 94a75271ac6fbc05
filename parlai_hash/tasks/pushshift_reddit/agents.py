"""``-t pushshift_reddit``: (reply chain, reply) examples from pushshift.io Reddit dumps.

    parlai display_data -t pushshift_reddit --reddit-dump-dir /data/reddit
    parlai train_model -t pushshift_reddit -dt train:stream --reddit-dump-dir /data/reddit ...

The first use builds the shards (see ``build.py``; ``parlai build_reddit``
does the same on its own). The teacher then streams them chunk by chunk
(ParlAI's ChunkTeacher), so the data never has to fit in memory.
"""

from __future__ import annotations

import threading
from typing import List, Optional, Tuple

from parlai.core.message import Message
from parlai.core.params import ParlaiParser
from parlai.core.opt import Opt
from parlai.core.teachers import ChunkTeacher
from parlai.utils.data import DatatypeHelper

from parlai_hash.errors import OptionError, install_excepthook
from parlai_hash.tasks.pushshift_reddit.build import ensure_built
from parlai_hash.tasks.pushshift_reddit.config import add_build_args, config_from_opt
from parlai_hash.tasks.pushshift_reddit.shards import ShardInfo, read_shard
from parlai_hash.tasks.pushshift_reddit.stats import stats_table

install_excepthook()

#: (text, label, comment id, thread id) as queued by the ChunkTeacher.
QueuedExample = Tuple[str, str, str, str]


class PushshiftRedditTeacher(ChunkTeacher):
    """Each example: up to N previous comments of a reply chain, and the reply."""

    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt)
        add_build_args(parser)
        return parser

    def __init__(self, opt: Opt, shared: Optional[dict] = None):
        self.id = 'pushshift_reddit'
        self.split = DatatypeHelper.fold(opt['datatype'])
        if shared is None:
            result = ensure_built(config_from_opt(opt))
            if result.built_now:
                from parlai.utils import logging

                logging.info(
                    f'pushshift_reddit: built {result.build_dir}\n{stats_table(result.manifest.stats)}'
                )
            self.build_dir = result.build_dir
            self.shard_infos: List[ShardInfo] = result.manifest.splits.get(self.split, [])
            if not result.manifest.examples(self.split):
                raise OptionError(
                    '--reddit-dump-dir',
                    f'the build in {self.build_dir} has no {self.split} examples',
                    (
                        f'add dump months, loosen the filters, or raise --reddit-{self.split}-fraction'
                        if self.split != 'train'
                        else 'add dump months or loosen the filters'
                    ),
                )
            self.stopping = threading.Event()
        else:
            self.build_dir = shared['reddit_build_dir']
            self.shard_infos = shared['reddit_shard_infos']
            self.stopping = shared['reddit_stopping']
        super().__init__(opt, shared)

    def share(self) -> dict:
        shared = super().share()
        shared['reddit_build_dir'] = self.build_dir
        shared['reddit_shard_infos'] = self.shard_infos
        shared['reddit_stopping'] = self.stopping
        return shared

    # ChunkTeacher.shutdown() queues "no more chunks" markers, but in training
    # mode its loader takes such a marker for the end of an epoch, starts the
    # next one, and can hand a marker to load_from_chunk (a crash in the loader
    # thread). Remember that we are stopping, and end the loader cleanly.

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()

    def get_chunk(self):
        if self.stopping.is_set():
            return None, None  # the loader's own end signal
        return super().get_chunk()

    def _get_data_folder(self) -> str:
        return str(self.build_dir)

    def get_num_samples(self, opt: Opt) -> Tuple[int, int]:
        examples = sum(shard.examples for shard in self.shard_infos)
        return examples, examples  # one example per episode

    def get_fold_chunks(self, opt: Opt) -> List[int]:
        return list(range(len(self.shard_infos)))

    def load_from_chunk(self, chunk_idx: Optional[int]) -> List[QueuedExample]:
        if chunk_idx is None:
            return []  # a shutdown marker that training-mode cycling passed on
        return [
            ('\n'.join(example.context), example.response, example.comment_id, example.link_id)
            for example in read_shard(self.build_dir, self.shard_infos[chunk_idx].file)
        ]

    def create_message(self, queue_output: QueuedExample, entry_idx: int = 0) -> Message:
        text, label, comment_id, link_id = queue_output
        return Message(
            {
                'text': text,
                'labels': [label],
                'episode_done': True,
                'reddit_comment_id': comment_id,
                'reddit_link_id': link_id,
            }
        )


class DefaultTeacher(PushshiftRedditTeacher):
    pass
