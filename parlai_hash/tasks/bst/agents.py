"""``-t bst``: Blended Skill Talk for fine-tuning, built on ParlAI's own teacher.

Reads the raw release ``{split}.json`` from ``--bst-datafile`` (the file, or a
folder holding ``train.json``/``valid.json``/``test.json``), or from
``<datapath>/blended_skill_talk/``, where ParlAI's ``blended_skill_talk``
builder downloads it. Messages are those of ParlAI's teacher (see
``episodes``); ``--bst-persona`` and ``--bst-context`` choose what the first
turn carries.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser
from parlai.core.teachers import DialogTeacher
from parlai.utils import logging
from parlai.utils.data import DatatypeHelper

from parlai_hash.errors import OptionError, install_excepthook
from parlai_hash.tasks.bst.episodes import PERSONA_MODES, episode_messages, load_episodes

install_excepthook()


def downloaded_file(opt: Opt, split: str) -> Path:
    """``{split}.json`` as ParlAI's builder leaves it, downloading it if needed."""
    from parlai.tasks.blended_skill_talk.build import RESOURCES, build

    archive = RESOURCES[0]
    fix = (
        f'get {archive.file_name} ({archive.url}) elsewhere and pass --bst-datafile '
        f'with its {split}.json, or with the folder holding train/valid/test.json'
    )
    try:
        build(opt)
    except (RuntimeError, OSError) as err:
        raise OptionError('--bst-datafile', f'could not download BST ({err})', fix) from None
    except AssertionError:  # ParlAI's checksum
        raise OptionError(
            '--bst-datafile', 'a downloaded BST file has the wrong sha256 (an error page?)', fix
        ) from None
    return Path(opt['datapath']) / 'blended_skill_talk' / f'{split}.json'


def local_file(given: str, split: str) -> Path:
    path = Path(given).expanduser()
    if path.is_dir():
        path = path / f'{split}.json'
        if not path.is_file():
            raise OptionError(
                '--bst-datafile',
                f'{path} does not exist',
                f'put the release\'s {split}.json there, or pass a file',
            )
        return path
    if not path.is_file():
        raise OptionError(
            '--bst-datafile',
            f'{path} does not exist',
            'pass a train/valid/test.json of the BST release, or the folder holding them',
        )
    if path.stem in ('train', 'valid', 'test') and path.stem != split:
        logging.warning(f'bst: reading {path} for the {split} split')
    return path


class BstTeacher(DialogTeacher):
    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt)
        group = parser.add_argument_group('Blended Skill Talk teacher')
        group.add_argument(
            '--bst-datafile',
            type=str,
            default=None,
            help='A raw BST {split}.json (read for whatever -dt asks: the same file for '
            'train and valid) or a folder holding train.json, valid.json, test.json. '
            'Default: <datapath>/blended_skill_talk/, downloaded by ParlAI if missing.',
        )
        group.add_argument(
            '--bst-persona',
            choices=PERSONA_MODES,
            default='self',
            help='Persona lines before the first turn: the guided speaker\'s own ("your '
            'persona:", as ParlAI), both speakers\' (adds "partner\'s persona:"), or none.',
        )
        group.add_argument(
            '--bst-context',
            type='bool',
            default=True,
            help='Put the seed context before the first turn, as ParlAI does: the Wizard '
            'of Wikipedia topic (for WoW seeds) and the two seed utterances.',
        )
        return parser

    def __init__(self, opt: Opt, shared: Optional[Dict] = None):
        opt = copy.deepcopy(opt)
        self.id = 'bst'
        self.persona = opt.get('bst_persona') or 'self'
        self.context = opt.get('bst_context', True)
        self._stream_counts: Optional[Tuple[int, int]] = None
        if not shared:
            split = DatatypeHelper.fold(opt['datatype'])
            if opt.get('bst_datafile'):
                path = local_file(opt['bst_datafile'], split)
            else:
                path = downloaded_file(opt, split)
            opt['datafile'] = str(path)
            logging.info(f'bst {split}: reading {path}')
        super().__init__(opt, shared)

    def setup_data(self, path: str) -> Iterator[Tuple[Dict, bool]]:
        for episode in load_episodes(Path(path)):
            for index, message in enumerate(episode_messages(episode, self.persona, self.context)):
                yield message, index == 0

    # In stream mode ParlAI would count examples by writing '<datafile>.lengths'
    # beside the data (impossible in a read-only folder); count in memory.
    def _count(self) -> Tuple[int, int]:
        if self._stream_counts is None:
            episodes = examples = 0
            for _, new_episode in self.setup_data(self.opt['datafile']):
                episodes += new_episode
                examples += 1
            self._stream_counts = (episodes, examples)
        return self._stream_counts

    def num_episodes(self) -> int:
        return self._count()[0] if self.stream else super().num_episodes()

    def num_examples(self) -> int:
        return self._count()[1] if self.stream else super().num_examples()


class DefaultTeacher(BstTeacher):
    pass
