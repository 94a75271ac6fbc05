"""Finding the monthly dumps and streaming their lines.

pushshift publishes comments as ``RC_YYYY-MM`` files and submissions (posts)
as ``RS_YYYY-MM`` files, compressed with zstd (a 2 GiB window, so
``max_window_size=2**31``), older months with bz2 or xz; some mirrors ship
them decompressed (``.ndjson``/``.json``). Everything here reads in
fixed-size chunks, so memory stays bounded whatever the file size.

A compressed stream that ends mid-frame (an interrupted download) raises
``TruncatedDumpError``: silently using the first half of a month would build
a data set that looks complete and is not.
"""

from __future__ import annotations

import bz2
import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional

from parlai_hash.errors import OptionError

DUMPS_HELP = (
    'pushshift monthly comment dumps RC_YYYY-MM.zst/.bz2/.xz/.ndjson, and optionally the '
    'submission dumps RS_YYYY-MM.* (files.pushshift.io, or its academictorrents mirror)'
)
#: Submission files start so (``RS_2019-10.zst``); comment files are the other dumps.
SUBMISSION_FILE_PREFIX = 'RS_'

CHUNK_BYTES = 1 << 20
#: A "line" longer than this is garbage (real comments are < 100 KB); it is
#: reported as one corrupt line instead of being held in memory.
MAX_LINE_BYTES = 1 << 24
ZSTD_MAX_WINDOW = 2**31

#: Preferred first when one month is present in several formats: the plain
#: file needs no decompression.
FORMAT_PREFERENCE = ('.ndjson', '.json', '.zst', '.xz', '.bz2')


class TruncatedDumpError(Exception):
    """A compressed dump ended before its end-of-stream marker."""


@dataclass(frozen=True)
class DumpFile:
    path: Path
    #: The month (``RC_2005-12``): one month in two formats is read once.
    stem: str
    size: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def holds_submissions(self) -> bool:
        return self.stem.startswith(SUBMISSION_FILE_PREFIX)


@dataclass(frozen=True)
class DumpListing:
    #: The comment months (``RC_``).
    dumps: List[DumpFile]
    #: The submission months (``RS_``).
    submissions: List[DumpFile]
    #: Same month in another format, other files.
    ignored: Dict[str, str]

    def inputs(self, read_submissions: bool) -> List[DumpFile]:
        """The files a build reads: the comments, and the submissions when it uses them."""
        return self.dumps + (self.submissions if read_submissions else [])


def _format_suffix(name: str) -> Optional[str]:
    for suffix in FORMAT_PREFERENCE:
        if name.endswith(suffix):
            return suffix
    return None


def list_dumps(folder: Path) -> DumpListing:
    """The comment and submission dumps directly in ``folder``, one per month, in month order."""
    by_stem: Dict[str, List[Path]] = {}
    ignored: Dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith('.') or not path.is_file():
            continue
        suffix = _format_suffix(path.name)
        if suffix is None:
            ignored[path.name] = 'not a .zst/.bz2/.xz/.ndjson/.json file'
        else:
            by_stem.setdefault(path.name[: -len(suffix)], []).append(path)
    dumps, submissions = [], []
    for stem in sorted(by_stem):
        paths = sorted(by_stem[stem], key=lambda p: FORMAT_PREFERENCE.index(_format_suffix(p.name)))
        chosen = paths[0]
        for other in paths[1:]:
            ignored[other.name] = f'same month as {chosen.name}, which is read instead'
        dump = DumpFile(path=chosen, stem=stem, size=chosen.stat().st_size)
        (submissions if dump.holds_submissions else dumps).append(dump)
    return DumpListing(dumps=dumps, submissions=submissions, ignored=ignored)


def require_dumps(folder: Path) -> DumpListing:
    """``list_dumps``, or an OptionError when the folder holds no comment dump."""
    listing = list_dumps(folder)
    if not listing.dumps:
        others = sorted([*listing.ignored, *(dump.name for dump in listing.submissions)])
        found = f" (found only: {', '.join(others)})" if others else ' (it is empty)'
        raise OptionError(
            '--reddit-dump-dir', f'no comment dumps in {folder}{found}', f'put {DUMPS_HELP} in it'
        )
    return listing


def describe_dumps(dumps: List[DumpFile]) -> List[Dict[str, object]]:
    """Names and sizes: what identifies the input of a build."""
    return [{'name': dump.name, 'size': dump.size} for dump in dumps]


class _CountingReader:
    """Reports how many compressed bytes were consumed (for the progress bar)."""

    def __init__(self, raw: BinaryIO, on_bytes: Callable[[int], None]):
        self.raw = raw
        self.on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.on_bytes(len(data))
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return self.raw.closed


def _zstd_chunks(raw: _CountingReader, name: str) -> Iterator[bytes]:
    import zstandard

    decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    frame = decompressor.decompressobj()
    frame_has_input = False
    while True:
        data = raw.read(CHUNK_BYTES)
        if not data:
            break
        while data:
            try:
                out = frame.decompress(data)
            except zstandard.ZstdError as error:
                raise TruncatedDumpError(f'{name} is not a valid zstd stream ({error})') from None
            frame_has_input = True
            if out:
                yield out
            if not frame.eof:
                break
            # A file may hold several frames; the rest of this chunk belongs to the next.
            data = frame.unused_data
            frame = decompressor.decompressobj()
            frame_has_input = False
    if frame_has_input and not frame.eof:
        raise TruncatedDumpError(f'{name} ends in the middle of a zstd frame (truncated download?)')


def _stdlib_chunks(stream: BinaryIO, name: str, kind: str) -> Iterator[bytes]:
    try:
        while True:
            data = stream.read(CHUNK_BYTES)
            if not data:
                return
            yield data
    except EOFError:
        raise TruncatedDumpError(
            f'{name} ends before the end of its {kind} stream (truncated download?)'
        ) from None
    except (OSError, lzma.LZMAError) as error:
        raise TruncatedDumpError(f'{name} is not a valid {kind} stream ({error})') from None


def decompressed_chunks(dump: DumpFile, on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    """The decompressed bytes of ``dump``, chunk by chunk."""
    with open(dump.path, 'rb') as handle:
        raw = _CountingReader(handle, on_bytes)
        suffix = _format_suffix(dump.name)
        if suffix == '.zst':
            yield from _zstd_chunks(raw, dump.name)
        elif suffix == '.bz2':
            yield from _stdlib_chunks(bz2.BZ2File(raw), dump.name, 'bz2')
        elif suffix == '.xz':
            yield from _stdlib_chunks(lzma.LZMAFile(raw), dump.name, 'xz')
        else:
            yield from _stdlib_chunks(raw, dump.name, 'text')


def iter_lines(chunks: Iterator[bytes]) -> Iterator[Optional[bytes]]:
    """Split chunks into lines (without the newline); None for an oversized line."""
    pending: List[bytes] = []
    pending_bytes = 0
    oversized = False
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b'\n', start)
            if end < 0:
                break
            if oversized:
                yield None
            else:
                pending.append(chunk[start:end])
                yield b''.join(pending)
            pending, pending_bytes, oversized = [], 0, False
            start = end + 1
        if not oversized and start < len(chunk):
            pending.append(chunk[start:])
            pending_bytes += len(chunk) - start
            if pending_bytes > MAX_LINE_BYTES:
                pending, oversized = [], True
    if oversized:
        yield None
    elif pending_bytes:
        yield b''.join(pending)
