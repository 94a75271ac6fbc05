"""Download the official WikiText-103 archive into ``--datapath``, atomically.

As ParlAI's task builders do, the archive is a ``DownloadableFile`` with its
sha256; an archive already sitting in ``<datapath>/wikitext103/`` is used (and
checked) instead of downloading. Unlike ParlAI's ``untar``, every file lands in
place by one rename, so an interrupted build never leaves a half-written file.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from parlai.core import build_data

from parlai_hash.errors import OptionError
from parlai_hash.tasks.wikitext103.splits import SPLITS, tokens_file_name

# The official host (Merity et al.); the old s3://research.metamind.io copy is
# the same file. sha256 as published for wikitext-103-v1.zip.
ARCHIVE = build_data.DownloadableFile(
    'https://wikitext.smerity.com/wikitext-103-v1.zip',
    'wikitext-103-v1.zip',
    '242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590',
)
#: Folder inside the archive, and under ``<datapath>/wikitext103/``.
ARCHIVE_FOLDER = 'wikitext-103'


def task_root(datapath: str) -> Path:
    return Path(datapath) / 'wikitext103'


def downloaded_folder(datapath: str) -> Path:
    """Where the built ``wiki.*.tokens`` files live."""
    return task_root(datapath) / ARCHIVE_FOLDER


def ensure_file(datapath: str, file_name: str) -> Path:
    """The folder holding ``file_name``, downloading the archive if it is absent."""
    folder = downloaded_folder(datapath)
    if not (folder / file_name).is_file():
        build(datapath)
    return folder


def build(datapath: str) -> None:
    root = task_root(datapath)
    folder = downloaded_folder(datapath)
    root.mkdir(parents=True, exist_ok=True)
    where = (
        f'put wiki.{{train,valid,test}}.tokens in {folder} (or {ARCHIVE.file_name} in {root}), '
        'or pass --wikitext-dir DIR'
    )
    archive = root / ARCHIVE.file_name
    with tempfile.TemporaryDirectory(dir=root, prefix='.building-') as staging:
        if not archive.is_file():
            try:
                build_data.download(ARCHIVE.url, staging, ARCHIVE.file_name)
                ARCHIVE.checksum(staging)
            except (RuntimeError, OSError) as err:
                raise OptionError(
                    '--wikitext-dir', f'could not download {ARCHIVE.url} ({err})', where
                ) from None
            except AssertionError:
                raise OptionError(
                    '--wikitext-dir',
                    f'{ARCHIVE.url} did not send the official archive (sha256 differs; '
                    'an error page?)',
                    where,
                ) from None
            os.replace(Path(staging) / ARCHIVE.file_name, archive)
        else:
            try:
                ARCHIVE.checksum(str(root))
            except AssertionError:
                raise OptionError(
                    '--wikitext-dir',
                    f'{archive} is not the official archive (sha256 differs)',
                    f'delete it and run again to download it, or {where}',
                ) from None
        _extract(archive, Path(staging), folder)
    archive.unlink()  # as ParlAI's untar does: the tokens files are what is kept


def _extract(archive: Path, staging: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for split in SPLITS:
            member = f'{ARCHIVE_FOLDER}/{tokens_file_name(split)}'
            zf.extract(member, staging)
            os.replace(staging / member, folder / tokens_file_name(split))
