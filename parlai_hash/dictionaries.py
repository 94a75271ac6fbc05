"""The paper's dictionaries for ParlAI (Hash Layers, Table 4).

* Word level, the dataset's own vocabulary: nothing to build here. WikiText's
  ``.tokens`` are already tokenised on spaces, so ParlAI's
  ``--dict-tokenizer space`` (``parlai build_dict``, or ``train_model``, which
  builds the dictionary when ``--dict-file`` does not exist) gives exactly the
  words of the training split (~267k for WikiText-103, ``<unk>`` and ``<eos>``
  included) plus ParlAI's four special tokens.
* Byte-level BPE (~8k): ``build_bpe_dict`` trains one with HuggingFace
  ``tokenizers`` on a teacher's training text and writes the ``vocab.json`` and
  ``merges.txt`` that ``--dict-tokenizer bytelevelbpe --bpe-vocab --bpe-merge``
  loads. ParlAI adds its four special tokens, so its dictionary has 4 more.
  ``--dict-class parlai_hash.dictionaries:TaskBpeDictionaryAgent`` makes
  ``train_model`` train that BPE itself, on the task's training split, when the
  files that ``--bpe-vocab``/``--bpe-merge`` name do not exist yet.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Optional

from parlai.core.agents import Agent
from parlai.core.dict import DictionaryAgent
from parlai.core.opt import Opt
from parlai.utils import logging
from parlai.utils.data import DatatypeHelper

from parlai_hash.errors import OptionError
from parlai_hash.io_utils import atomic_write

if TYPE_CHECKING:
    from tokenizers import ByteLevelBPETokenizer

BPE_FILES = ('vocab.json', 'merges.txt')
#: Byte-level BPE starts from the 256 byte symbols; each merge adds one token.
BYTE_ALPHABET = 256
#: BlenderBot's dictionary, the paper's 8,008 tokens: 8,004 BPE tokens + ParlAI's 4 special ones.
DEFAULT_BPE_VOCAB_SIZE = 8004
DEFAULT_BPE_MIN_FREQUENCY = 2


@dataclass
class BpeDictionary:
    vocab: Path
    merges: Path
    size: int  # tokens in vocab.json (ParlAI's dictionary has 4 more)

    def parlai_args(self) -> List[str]:
        """The ``train_model`` flags that load this dictionary."""
        return ['--dict-tokenizer', 'bytelevelbpe', '--bpe-vocab', str(self.vocab),
                '--bpe-merge', str(self.merges)]


class _TextCollector(Agent):
    """Stands where the model would and keeps what the teacher says."""

    def __init__(self, opt: Opt):
        super().__init__(opt)
        self.id = 'build_bpe_dict'
        self.texts: List[str] = []

    def observe(self, observation: Dict) -> Dict:
        if not observation.get('batch_padding'):
            if observation.get('text'):
                self.texts.append(observation['text'])
            labels = observation.get('labels', observation.get('eval_labels')) or ()
            self.texts.extend(labels)
        return observation

    def act(self) -> Dict:
        return {'id': self.id, 'episode_done': False}


def teacher_texts(opt: Opt) -> Iterator[str]:
    """Text and labels of one ordered pass over the split that ``-dt`` names.

    The same fields ParlAI's ``build_dict`` counts (its default
    ``--dict-textfields text,labels``).
    """
    from parlai.core.worlds import create_task

    ordered = copy.deepcopy(opt)
    split = DatatypeHelper.fold(opt['datatype'])
    # Once through, in order; only train needs ':ordered' (valid/test always are).
    ordered['datatype'] = 'train:ordered:stream' if split == 'train' else f'{split}:stream'
    ordered['batchsize'] = 1
    ordered['image_mode'] = 'no_image_model'
    collector = _TextCollector(ordered)
    world = create_task(ordered, collector)
    while not world.epoch_done():
        world.parley()
        yield from collector.texts
        collector.texts.clear()


def train_bytelevel_bpe(
    texts: Iterable[str], vocab_size: int, min_frequency: int
) -> 'ByteLevelBPETokenizer':
    """A HuggingFace ``ByteLevelBPETokenizer`` trained on ``texts``.

    ``add_prefix_space`` as ParlAI's ``--bpe-add-prefix-space`` defaults to, so
    the first word of a text is split like every other word.
    """
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer(add_prefix_space=True)
    tokenizer.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False
    )
    return tokenizer


def save_bpe(tokenizer: 'ByteLevelBPETokenizer', out_dir: Path) -> BpeDictionary:
    """Write ``vocab.json`` and ``merges.txt`` into ``out_dir``, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix='.bpe-') as staging:
        tokenizer.save_model(staging)
        for name in BPE_FILES:
            with atomic_write(out_dir / name, 'wb') as f:
                f.write((Path(staging) / name).read_bytes())
    size = tokenizer.get_vocab_size()
    return BpeDictionary(out_dir / 'vocab.json', out_dir / 'merges.txt', size)


def check_bpe_options(vocab_size: int, min_frequency: int, out: str) -> None:
    if not out:
        raise OptionError(
            '--out', 'not given', 'pass the folder to write vocab.json and merges.txt into'
        )
    if vocab_size <= BYTE_ALPHABET:
        raise OptionError(
            '--bpe-vocab-size',
            f'got {vocab_size}, but the {BYTE_ALPHABET} byte symbols alone fill that',
            'ask for more, such as the paper\'s 8004 (8008 with ParlAI\'s special tokens)',
        )
    if min_frequency < 1:
        raise OptionError('--bpe-min-frequency', f'got {min_frequency}', 'pass 1 or more')


class _Counting:
    """Passes texts through and counts them (the trainer only consumes them)."""

    def __init__(self, texts: Iterable[str]):
        self.texts = texts
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.count += 1
            yield text


def _train_and_save(opt: Opt, vocab_size: int, min_frequency: int, out_dir: Path) -> BpeDictionary:
    texts = _Counting(teacher_texts(opt))
    tokenizer = train_bytelevel_bpe(iter(texts), vocab_size, min_frequency)
    if not texts.count:
        raise OptionError(
            '--task', f"{opt['task']} gave no text for {opt['datatype']}", 'check the task and its data'
        )
    bpe = save_bpe(tokenizer, out_dir)
    if bpe.size < vocab_size:
        logging.warning(
            f'the text allows only {bpe.size} tokens (asked {vocab_size}): '
            f'no pair of symbols left occurs {min_frequency}+ times'
        )
    logging.info(f'trained on {texts.count} texts; wrote {bpe.vocab} ({bpe.size} tokens) and {bpe.merges}')
    return bpe


def build_bpe_dict(opt: Opt) -> BpeDictionary:
    """Train a byte-level BPE on ``opt``'s task and write it to ``opt['out']``."""
    vocab_size, min_frequency = opt['bpe_vocab_size'], opt['bpe_min_frequency']
    check_bpe_options(vocab_size, min_frequency, opt.get('out'))
    bpe = _train_and_save(opt, vocab_size, min_frequency, Path(opt['out']).expanduser())
    logging.info('use it with: ' + ' '.join(bpe.parlai_args()))
    return bpe


def ensure_task_bpe(opt: Opt) -> Optional[BpeDictionary]:
    """Train the BPE that ``--bpe-vocab``/``--bpe-merge`` name, if either file is missing.

    It is trained as ``parlai build_bpe_dict`` would (8004 tokens, pairs seen
    twice or more) on ``--task``'s training split, whatever ``-dt`` says, and
    written where those options point. Returns None when both files exist.
    """
    given = {'--bpe-vocab': opt.get('bpe_vocab'), '--bpe-merge': opt.get('bpe_merge')}
    for option, value in given.items():
        if not value:
            raise OptionError(option, 'not given', 'name the BPE files to use, or to build when missing: '
                              '--bpe-vocab DIR/vocab.json --bpe-merge DIR/merges.txt')
    vocab, merges = (Path(v).expanduser() for v in given.values())
    if vocab.is_file() and merges.is_file():
        return None
    # The trainer writes both files into one folder under fixed names.
    if (vocab.name, merges.name) != BPE_FILES or vocab.parent != merges.parent:
        raise OptionError('--bpe-merge', f'cannot build {vocab} and {merges}: the trainer writes '
                          'vocab.json and merges.txt into one folder',
                          'point --bpe-vocab and --bpe-merge at DIR/vocab.json and DIR/merges.txt')
    train = copy.deepcopy(opt)
    train['datatype'] = 'train'
    logging.info(f'{vocab} or {merges} is missing: training a byte-level BPE on {opt["task"]} (train)')
    return _train_and_save(train, DEFAULT_BPE_VOCAB_SIZE, DEFAULT_BPE_MIN_FREQUENCY, vocab.parent)


class TaskBpeDictionaryAgent(DictionaryAgent):
    """ParlAI's dictionary; with ``--dict-tokenizer bytelevelbpe`` it first builds
    missing BPE files (:func:`ensure_task_bpe`).

    For ``--dict-class parlai_hash.dictionaries:TaskBpeDictionaryAgent``, the
    class ParlAI's ``build_dict`` (run by ``train_model`` before the model) uses;
    the model then loads the files with ParlAI's own dictionary.
    """

    def __init__(self, opt: Opt, shared: Optional[Dict] = None):
        if shared is None and opt.get('dict_tokenizer') == 'bytelevelbpe':
            ensure_task_bpe(opt)
        super().__init__(opt, shared)
