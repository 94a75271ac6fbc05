"""``-t wikitext103``: WikiText-103 language modelling as (previous sentence -> sentence),
or (previous chunk -> chunk) with ``--wikitext-unit chunk``.

Reads ``wiki.{train,valid,test}.tokens`` from ``--wikitext-dir``, or from
``<datapath>/wikitext103/wikitext-103/``, downloading the official archive
there when it is missing. Perplexity is ParlAI's usual one: per label token of
whichever dictionary the model uses (``--dict-tokenizer space`` gives the
dataset's own word vocabulary; a byte-level BPE from ``parlai build_bpe_dict``
gives subwords), plus the ``__end__`` ParlAI appends to every label.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, Iterator, NoReturn, Optional, Tuple

from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser
from parlai.core.teachers import DialogTeacher
from parlai.utils import logging
from parlai.utils.data import DatatypeHelper

from parlai_hash.errors import OptionError, install_excepthook
from parlai_hash.tasks.wikitext103 import build
from parlai_hash.tasks.wikitext103.articles import read_articles
from parlai_hash.tasks.wikitext103.examples import CONTEXT_MODES, CONTEXT_PREV
from parlai_hash.tasks.wikitext103.settings import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_SENTENCE_TOKENS,
    UNITS,
    example_settings,
)
from parlai_hash.tasks.wikitext103.splits import (
    CARVE_PATTERN,
    SPLITS,
    carved_split,
    check_local_folder,
    split_file,
    tokens_file_name,
)

install_excepthook()


class Wikitext103Teacher(DialogTeacher):
    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt)
        group = parser.add_argument_group('WikiText-103 teacher')
        group.add_argument(
            '--wikitext-dir',
            type=str,
            default=None,
            help='Folder holding wiki.{train,valid,test}.tokens (WikiText-103 or -2). '
            'Default: <datapath>/wikitext103/wikitext-103, downloaded if missing.',
        )
        group.add_argument(
            '--wikitext-unit',
            choices=UNITS,
            default=None,
            help='Label of each example: one sentence of an article (sentence), or a fixed '
            'chunk of it (chunk). Default: sentence, or chunk when --wikitext-chunk-tokens '
            'is given.',
        )
        group.add_argument(
            '--wikitext-context',
            choices=CONTEXT_MODES,
            default=CONTEXT_PREV,
            help='Input of each example: the previous sentence or chunk of the same article '
            '(prev), or nothing (none; the input is then a lone <eos>).',
        )
        group.add_argument(
            '--wikitext-context-tokens',
            type=int,
            default=0,
            help='With --wikitext-context prev: also older sentences or chunks of the article, '
            'whole ones, while the input stays within this many dataset tokens '
            '(0: the previous one only).',
        )
        group.add_argument(
            '--wikitext-sentence-tokens',
            type=int,
            default=None,
            help='Sentence unit: a longer sentence is cut into near-equal pieces of at most '
            f'this many dataset tokens (default {DEFAULT_SENTENCE_TOKENS}).',
        )
        group.add_argument(
            '--wikitext-chunk-tokens',
            type=int,
            default=None,
            help='Chunk unit: label length in dataset tokens (words and <eos>, whatever the '
            f'dictionary; default {DEFAULT_CHUNK_TOKENS}). Giving it selects the chunk unit.',
        )
        group.add_argument(
            '--wikitext-carve-from',
            choices=SPLITS,
            default=None,
            help='Take train, valid and test all from wiki.<SPLIT>.tokens, whole articles '
            'at a time: article i goes to train if i %% 10 < 8, valid if 8, test if 9. '
            'For a folder that holds only some splits.',
        )
        return parser

    def __init__(self, opt: Opt, shared: Optional[Dict] = None):
        opt = copy.deepcopy(opt)
        self.id = 'wikitext103'
        self.split = DatatypeHelper.fold(opt['datatype'])
        self.settings = example_settings(opt)
        self.carve_from = opt.get('wikitext_carve_from')
        if not shared:
            opt['datafile'] = str(self._locate(opt))
            how = f'carved {self.split} articles from' if self.carve_from else 'reading'
            logging.info(
                f'wikitext103 {self.split}: {self.settings.describe()}; {how} {opt["datafile"]}'
            )
        self._stream_examples: Optional[int] = None
        super().__init__(opt, shared)

    def _locate(self, opt: Opt) -> Path:
        wanted = self.carve_from or self.split
        if opt.get('wikitext_dir'):
            folder = Path(opt['wikitext_dir']).expanduser()
            check_local_folder(folder)
        else:
            folder = build.ensure_file(opt['datapath'], tokens_file_name(wanted))
        return split_file(folder, self.split, self.carve_from)

    def setup_data(self, path: str) -> Iterator[Tuple[Dict, bool]]:
        produced = articles = 0
        with open(path, encoding='utf-8') as f:
            for index, article in enumerate(read_articles(f)):
                articles += 1
                if self.carve_from and carved_split(index) != self.split:
                    continue
                for message in self.settings.examples(article):
                    produced += 1
                    yield message, True
        if not produced:
            self._raise_empty(path, articles)

    def _raise_empty(self, path: str, articles: int) -> NoReturn:
        if self.carve_from:
            first = CARVE_PATTERN.index(self.split)
            raise OptionError(
                '--wikitext-carve-from',
                f'the {self.split} split carved from {path} is empty: the file has {articles} '
                f'articles and the first {self.split} one is article {first} (0-based)',
                f'carve from a file with at least {first + 1} articles',
            )
        raise OptionError('--wikitext-dir', f'{path} holds no text', 'check the file')

    # In stream mode ParlAI would count examples by writing '<datafile>.lengths'
    # beside the data (wrong once the unit options change, and impossible in a
    # read-only folder); count with one pass instead. One example per episode.
    def num_examples(self) -> int:
        if not self.stream:
            return super().num_examples()
        if self._stream_examples is None:
            self._stream_examples = sum(1 for _ in self.setup_data(self.opt['datafile']))
        return self._stream_examples

    def num_episodes(self) -> int:
        return self.num_examples()


class DefaultTeacher(Wikitext103Teacher):
    pass
