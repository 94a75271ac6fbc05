"""Which file holds a split, and how splits are carved out of one file.

Carving (``--wikitext-carve-from SPLIT``) is for a folder that holds only some
of the three files, such as a lone ``wiki.valid.tokens``: every split then
comes from that one file, whole articles at a time, by article index:
``i % 10`` in 0-7 -> train, 8 -> valid, 9 -> test. This is deterministic,
gives 80/10/10 to within one article, and interleaves the splits so none of
them is one contiguous stretch of the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from parlai_hash.errors import OptionError

SPLITS = ('train', 'valid', 'test')

#: Split of article ``i`` when carving: ``CARVE_PATTERN[i % 10]``.
CARVE_PATTERN = ('train',) * 8 + ('valid', 'test')


def tokens_file_name(split: str) -> str:
    return f'wiki.{split}.tokens'


def carved_split(article_index: int) -> str:
    return CARVE_PATTERN[article_index % len(CARVE_PATTERN)]


def present_splits(folder: Path) -> List[str]:
    return [s for s in SPLITS if (folder / tokens_file_name(s)).is_file()]


def check_local_folder(folder: Path) -> None:
    """``--wikitext-dir`` must be an existing folder."""
    if folder.is_file():
        raise OptionError(
            '--wikitext-dir', f'{folder} is a file', f'pass its folder: {folder.parent}'
        )
    if not folder.is_dir():
        raise OptionError(
            '--wikitext-dir',
            f'{folder} does not exist',
            'pass the folder holding wiki.{train,valid,test}.tokens',
        )


def split_file(folder: Path, split: str, carve_from: str) -> Path:
    """The file to read for ``split``; a one-line error naming the fix if absent."""
    if carve_from:
        path = folder / tokens_file_name(carve_from)
        if not path.is_file():
            raise OptionError(
                '--wikitext-carve-from',
                f'{path} does not exist (the folder has: {_listing(folder)})',
                'carve from a split that is there',
            )
        return path
    path = folder / tokens_file_name(split)
    if path.is_file():
        return path
    present = present_splits(folder)
    if present:
        fix = (
            f'add {path.name}, use -dt {present[0]}, or pass --wikitext-carve-from {present[0]} '
            f'to split {tokens_file_name(present[0])} 8:1:1 into train/valid/test by article'
        )
    else:
        fix = 'pass --wikitext-dir with the folder holding wiki.{train,valid,test}.tokens'
    raise OptionError(
        '--wikitext-dir', f'{path} does not exist (the folder has: {_listing(folder)})', fix
    )


def _listing(folder: Path) -> str:
    names = ', '.join(tokens_file_name(s) for s in present_splits(folder))
    return names or 'no wiki.*.tokens file'
