"""Build the pushshift.io Reddit dialogue shards from monthly comment dumps.

Four resumable steps, each committed to the SQLite index as it goes:

1. ingest: stream every dump line by line, parse, filter, and insert every
   submission (``RS_`` files, when present) and comment (kept ones with their
   cleaned text) keyed by id;
2. resolve: walk the reply trees down from the submissions, so a comment is a
   response only when its whole chain up to the thread is kept;
3. emit: per split, write shards of (context, response) examples, within the
   depth limit;
4. finish: write the manifest (the only file the teacher trusts), print stats.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from tqdm import tqdm

from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit.config import BuildConfig, check_dump_dir
from parlai_hash.tasks.pushshift_reddit.dumps import (
    DumpFile,
    TruncatedDumpError,
    decompressed_chunks,
    describe_dumps,
    iter_lines,
    require_dumps,
)
from parlai_hash.tasks.pushshift_reddit.filters import CommentFilter
from parlai_hash.tasks.pushshift_reddit.index import CommentIndex, FingerprintMismatch
from parlai_hash.tasks.pushshift_reddit.records import parse_comment, parse_submission, to_base36
from parlai_hash.tasks.pushshift_reddit.shards import (
    FORMAT_VERSION,
    Example,
    Manifest,
    SHARD_GLOB,
    ShardInfo,
    read_manifest,
    shard_name,
    write_shard,
)
from parlai_hash.tasks.pushshift_reddit.splits import SPLITS, split_of_thread
from parlai_hash.tasks.pushshift_reddit.stats import (
    SUBMISSION_STATS_PREFIX,
    empty_line_counters,
    empty_submission_counters,
)

INDEX_FILE = 'index.sqlite'
LOCK_FILE = '.build.lock'


def _log(message: str) -> None:
    from parlai.utils import logging

    logging.info(message)


@dataclass(frozen=True)
class BuildResult:
    build_dir: Path
    manifest: Manifest
    #: False when a finished build was found and nothing was done.
    built_now: bool


@contextmanager
def _exclusive(build_dir: Path) -> Iterator[None]:
    """One builder per folder; a second process waits, then finds the build done."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / LOCK_FILE, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_built(config: BuildConfig) -> BuildResult:
    """The finished build in ``config.build_dir``, building (or resuming) it first if needed."""
    assert config.build_dir is not None, 'config_from_opt derives the build dir'
    manifest = read_manifest(config.build_dir)
    if manifest is None:
        with _exclusive(config.build_dir):
            manifest = read_manifest(config.build_dir)
            if manifest is None:
                return BuildResult(config.build_dir, _build(config), built_now=True)
    if manifest.fingerprint.get('shape') != config.shape():
        _log(
            f'pushshift_reddit: {config.build_dir} was built with other options; using it as it is '
            '(delete it to rebuild with the current ones)'
        )
    return BuildResult(config.build_dir, manifest, built_now=False)


def _build(config: BuildConfig) -> Manifest:
    build_dir = config.build_dir
    dump_dir = check_dump_dir(config.dump_dir)
    listing = require_dumps(dump_dir)
    for name, why in listing.ignored.items():
        _log(f'pushshift_reddit: ignoring {name}: {why}')
    _log_what_is_approximated(config, dump_dir, bool(listing.submissions))
    fingerprint = {
        'format': FORMAT_VERSION,
        'dump_dir': str(dump_dir),
        'dumps': describe_dumps(listing.inputs(config.post_titles)),
        'shape': config.shape(),
    }
    index_path = build_dir / INDEX_FILE
    index = _open_index(index_path, fingerprint)
    try:
        comment_filter = CommentFilter(config.filters)

        def submission_line(line: Optional[bytes], counts: Dict[str, int]) -> None:
            _ingest_submission(index, line, comment_filter, counts)

        def comment_line(line: Optional[bytes], counts: Dict[str, int]) -> None:
            _ingest_line(index, line, comment_filter, config, counts)

        # Submissions first: only an order for the progress bars, resolving needs both.
        post_counts = empty_submission_counters()
        for dump in listing.submissions if config.post_titles else []:
            counts = _ingest(index, dump, submission_line, empty_submission_counters, config)
            _add(post_counts, counts)
        line_counts = empty_line_counters()
        for dump in listing.dumps:
            _add(line_counts, _ingest(index, dump, comment_line, empty_line_counters, config))
        _resolve(index)
        splits = {split: _emit(index, split, config) for split in SPLITS}
        reply_counts = index.reply_counts(config.max_depth)
        stats = {
            **line_counts,
            **{f'kept_{key}': value for key, value in reply_counts.items()},
            **{
                f'examples_{split}': sum(s.examples for s in shards)
                for split, shards in splits.items()
            },
            **{f'{SUBMISSION_STATS_PREFIX}{key}': value for key, value in post_counts.items()},
        }
        manifest = Manifest(splits=splits, stats=stats, fingerprint=fingerprint)
        manifest.write(build_dir)
    finally:
        index.close()  # an uncommitted transaction (the failed step) is rolled back
    if not config.keep_index:
        index_path.unlink()
    return manifest


def _add(totals: Dict[str, int], counts: Dict[str, int]) -> None:
    for key, value in counts.items():
        totals[key] += value


def _log_what_is_approximated(config: BuildConfig, dump_dir: Path, has_submissions: bool) -> None:
    """Say when a rule cannot be applied as Recipes describes it with what was given."""
    filters = config.filters
    if filters.max_bpe_tokens and filters.bpe_files is None:
        _log(
            f'pushshift_reddit: no --reddit-bpe-vocab/--reddit-bpe-merge: the '
            f'{filters.max_bpe_tokens}-BPE-token limit counts byte-level pre-tokens (words, '
            'numbers, punctuation runs), a lower bound of any BPE\'s count'
        )
    if config.post_titles and not has_submissions:
        _log(
            f'pushshift_reddit: no RS_ submission dumps in {dump_dir}: without post titles, '
            'replies to a post are context only and contexts start at the top-level comment'
        )


def _open_index(index_path: Path, fingerprint: Dict[str, object]) -> CommentIndex:
    """The index of this build: resumed if an interrupted attempt left one."""
    index = CommentIndex(index_path)
    try:
        if index.claim(fingerprint):
            _log(f'pushshift_reddit: resuming the interrupted build in {index_path.parent}')
        return index
    except FingerprintMismatch:
        # Typically a truncated dump that was downloaded again: the unfinished
        # work is for other input, and nothing of it was ever published.
        index.close()
        _log(
            f'pushshift_reddit: {index_path.parent} holds an unfinished build of other dumps '
            'or options; discarding it'
        )
        index_path.unlink()
        for split in SPLITS:
            for stale in (index_path.parent / split).glob(SHARD_GLOB):
                stale.unlink()
        index = CommentIndex(index_path)
        index.claim(fingerprint)
        return index


#: Handles one line of a dump (None: an oversized line) and updates the counters.
LineHandler = Callable[[Optional[bytes], Dict[str, int]], None]


def _ingest(
    index: CommentIndex,
    dump: DumpFile,
    handle_line: LineHandler,
    empty_counters: Callable[[], Dict[str, int]],
    config: BuildConfig,
) -> Dict[str, int]:
    """Insert one dump's comments or submissions; returns its line counters."""
    lines_done, done, saved = index.dump_progress(dump.name)
    if done:
        return saved
    counts = {**empty_counters(), **saved}
    if lines_done:
        _log(
            f'pushshift_reddit: {dump.name}: skipping {lines_done} lines ingested before the interruption'
        )
    line_number = 0
    with tqdm(total=dump.size, unit='B', unit_scale=True, desc=dump.name, mininterval=1.0) as bar:
        try:
            for line in iter_lines(decompressed_chunks(dump, bar.update)):
                if line is not None and not line.strip():
                    continue  # blank lines carry nothing, not even corruption
                line_number += 1
                if line_number <= lines_done:
                    continue  # committed by an interrupted run
                handle_line(line, counts)
                if line_number % config.commit_every_lines == 0:
                    index.commit_dump_progress(dump.name, line_number, False, counts)
        except TruncatedDumpError as error:
            raise OptionError(
                '--reddit-dump-dir',
                str(error),
                f'download {dump.name} again, or move it out of the folder',
            ) from None
    if counts['read'] and counts['corrupt'] > config.max_corrupt_fraction * counts['read']:
        what = 'submissions' if dump.holds_submissions else 'comments'
        raise OptionError(
            '--reddit-dump-dir',
            f"{counts['corrupt']} of {counts['read']} lines of {dump.name} are not Reddit {what}",
            'move that file out of the folder (or raise --reddit-max-corrupt-fraction)',
        )
    index.commit_dump_progress(dump.name, line_number, True, counts)
    return counts


def _ingest_line(
    index: CommentIndex,
    line: Optional[bytes],
    comment_filter: CommentFilter,
    config: BuildConfig,
    counts: Dict[str, int],
) -> None:
    counts['read'] += 1
    comment = parse_comment(line) if line is not None else None
    if comment is None:
        counts['corrupt'] += 1
        return
    body, reason = comment_filter.apply(comment)
    split = split_of_thread(comment.link_id, config.valid_fraction, config.test_fraction)
    row = (comment.id, comment.parent_id, comment.link_id, split, None if reason else body)
    if not index.insert_comment(row):
        counts['duplicate'] += 1
    elif reason:
        counts[f'dropped_{reason}'] += 1
    else:
        counts['kept'] += 1


def _ingest_submission(
    index: CommentIndex,
    line: Optional[bytes],
    comment_filter: CommentFilter,
    counts: Dict[str, int],
) -> None:
    counts['read'] += 1
    submission = parse_submission(line) if line is not None else None
    if submission is None:
        counts['corrupt'] += 1
        return
    # The title is the first turn of its thread, so it passes the comments' rules;
    # a dropped one takes the thread with it, as a dropped comment its replies.
    title, reason = comment_filter.check(submission.title, submission.author, submission.subreddit)
    if not index.insert_submission((submission.id, None if reason else title)):
        counts['duplicate'] += 1
    elif reason:
        counts['dropped'] += 1
    else:
        counts['kept'] += 1


def _resolve(index: CommentIndex) -> None:
    levels = 0
    for _ in tqdm(index.resolve_threads(), desc='linking replies', unit=' levels', mininterval=1.0):
        levels += 1
    _log(f'pushshift_reddit: linked replies to their parents ({levels} reply levels)')


def _emit(index: CommentIndex, split: str, config: BuildConfig) -> List[ShardInfo]:
    """Write ``split``'s examples in shards of ``shard_size``, resuming after the last one written."""
    split_number = SPLITS.index(split)
    index.prepare_examples()
    written = index.shards(split)
    shards = [ShardInfo(file, examples) for file, examples, _ in written]
    after_id = written[-1][2] if written else -1
    total = index.count_responses(split_number, config.max_depth)
    with tqdm(
        total=total,
        initial=sum(s.examples for s in shards),
        desc=f'{split} examples',
        mininterval=1.0,
    ) as bar:
        while True:
            rows = index.responses(split_number, after_id, config.shard_size, config.max_depth)
            if not rows:
                break
            examples = [
                Example(
                    context=index.context(parent, link, config.max_context_turns),
                    response=body,
                    comment_id=f't1_{to_base36(comment_id)}',
                    link_id=f't3_{to_base36(link)}',
                )
                for comment_id, parent, link, body in rows
            ]
            name = shard_name(split, len(shards))
            write_shard(config.build_dir, name, examples)
            after_id = rows[-1][0]
            index.commit_shard(split, len(shards), name, after_id, len(examples))
            shards.append(ShardInfo(name, len(examples)))
            bar.update(len(examples))
    return shards
