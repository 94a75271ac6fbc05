"""Counting byte-level BPE tokens for the "longer than N BPE tokens" rule.

With ``--reddit-bpe-vocab`` and ``--reddit-bpe-merge`` (the ``vocab.json`` and
``merges.txt`` of a byte-level BPE, e.g. from ``parlai build_bpe_dict``) the
count is exact: the tokens ParlAI's ``--dict-tokenizer bytelevelbpe`` gives
the text. Without them the count is the number of byte-level pre-tokens
(GPT-2's split into words, numbers, runs of punctuation and of spaces). Every
pre-token becomes one or more BPE tokens whatever the vocabulary, so this is a
lower bound: the rule then drops only comments that any byte-level BPE would
find too long.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from parlai_hash.errors import OptionError

#: What the build key records when no vocabulary is given.
PRETOKEN_LOWER_BOUND = 'byte-level pre-tokens (lower bound)'

_FIX = (
    'pass both --reddit-bpe-vocab and --reddit-bpe-merge '
    '(vocab.json and merges.txt of a byte-level BPE)'
)


@dataclass(frozen=True)
class BpeFiles:
    vocab: Path
    merges: Path
    #: Of both files' bytes: the build key follows the vocabulary, not where it lies.
    sha1: str


def _existing_file(option: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        problem = f'{path} is not a file' if path.exists() else f'{path} does not exist'
        raise OptionError(option, problem, _FIX)
    return path.resolve()


def check_bpe_files(vocab: Optional[str], merges: Optional[str]) -> Optional[BpeFiles]:
    """The BPE files of the options (None when neither is given), checked and hashed."""
    if not vocab and not merges:
        return None
    if not vocab or not merges:
        missing = '--reddit-bpe-vocab' if not vocab else '--reddit-bpe-merge'
        raise OptionError(missing, 'not given, but the other BPE file is', _FIX)
    paths = (
        _existing_file('--reddit-bpe-vocab', vocab),
        _existing_file('--reddit-bpe-merge', merges),
    )
    digest = hashlib.sha1()
    for path in paths:
        digest.update(path.read_bytes())
    files = BpeFiles(paths[0], paths[1], digest.hexdigest())
    _load_tokenizer(files)  # a bad file is an option error now, not in the middle of a build
    return files


def _load_tokenizer(files: BpeFiles):
    from tokenizers import ByteLevelBPETokenizer

    try:
        # add_prefix_space: ParlAI's --bpe-add-prefix-space default for bytelevelbpe
        return ByteLevelBPETokenizer(str(files.vocab), str(files.merges), add_prefix_space=True)
    except Exception as error:  # tokenizers raises plain Exceptions for bad files
        raise OptionError(
            '--reddit-bpe-vocab', f'cannot load {files.vocab} and {files.merges} ({error})', _FIX
        ) from None


def describe_tokenizer(files: Optional[BpeFiles]) -> str:
    return f'bpe sha1 {files.sha1}' if files else PRETOKEN_LOWER_BOUND


def token_counter(files: Optional[BpeFiles]) -> Callable[[str], int]:
    """A function giving the (exact, or lower-bound) BPE token count of a text."""
    if files is not None:
        tokenizer = _load_tokenizer(files)
        return lambda text: len(tokenizer.encode(text).ids)
    from tokenizers.pre_tokenizers import ByteLevel

    pre_tokenizer = ByteLevel(add_prefix_space=True)
    return lambda text: len(pre_tokenizer.pre_tokenize_str(text))


class TokenLimit:
    """Whether a text is longer than ``limit`` BPE tokens (0: never)."""

    def __init__(self, limit: int, files: Optional[BpeFiles]):
        self.limit = limit
        self._count = token_counter(files) if limit else None

    def exceeded(self, text: str) -> bool:
        if self._count is None:
            return False
        # Each byte-level token covers at least one byte (the added prefix space
        # included): short texts need no tokenizer, and most comments are short.
        if len(text.encode('utf-8')) + 1 <= self.limit:
            return False
        return self._count(text) > self.limit
