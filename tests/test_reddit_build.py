"""Building pushshift_reddit shards from the hand-written fixture months.

``tests/fixtures/reddit/README.md`` lists what each fixture line is for and
the outcome the build must give it under ``--reddit-rules ours`` (the rules
it was written for, which these build-mechanics tests keep); the counts below
follow from that table. ``FIXTURE_STATS_RECIPES`` is the same month under the
default rules; ``test_reddit_rules.py`` has the fixture written for those.
"""

from __future__ import annotations

import bz2
import dataclasses
import json
import lzma
import shutil
from pathlib import Path
from typing import Dict, List

import pytest
import zstandard

from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit import build as build_module
from parlai_hash.tasks.pushshift_reddit.build import INDEX_FILE, BuildResult, ensure_built
from parlai_hash.tasks.pushshift_reddit.config import config_from_opt
from parlai_hash.tasks.pushshift_reddit.shards import MANIFEST, Example, read_manifest, read_shard

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'reddit'
MONTHS = ['RC_2010-01.ndjson', 'RC_2010-02.ndjson']

FIXTURE_STATS = {
    'read': 22,
    'corrupt': 2,
    'duplicate': 1,
    'dropped_deleted': 1,
    'dropped_subreddit_blocked': 1,
    'dropped_bot_author': 1,
    'dropped_url': 1,
    'dropped_too_short': 1,
    'dropped_too_long': 1,
    'dropped_non_ascii_start': 0,
    'dropped_garbled': 1,
    'dropped_non_english': 1,
    'dropped_too_many_tokens': 0,
    'kept': 11,
    'kept_top_level': 2,
    'kept_parent_missing': 1,
    'kept_ancestor_dropped': 1,
    'kept_too_deep': 0,
    'examples_train': 7,
    'examples_valid': 0,
    'examples_test': 0,
    # no RS_ files
    'submissions_read': 0,
    'submissions_corrupt': 0,
    'submissions_duplicate': 0,
    'submissions_dropped': 0,
    'submissions_kept': 0,
}
# Recipes keeps the symbol line (da) and the Spanish reply (db), which are
# ASCII from their first character and short, and drops d9 (2,400 characters,
# with spaces) for its 600 tokens rather than for its length.
FIXTURE_STATS_RECIPES = {
    **FIXTURE_STATS,
    'dropped_too_long': 0,
    'dropped_garbled': 0,
    'dropped_non_english': 0,
    'dropped_too_many_tokens': 1,
    'kept': 13,
    'examples_train': 9,
}

Q = 'What is the best way to learn to cook at home?'
A = 'Start with simple recipes and cook them again and again.'
B = '> simple recipes That is how I learned too, it really works & it is fun.'
LATER = 'Coming back to this thread a month later: it worked for me.'
KITCHEN = 'What went wrong in your kitchen this week?'
FIXTURE_EXAMPLES = {
    't1_d2': ([Q], A),
    't1_d3': ([Q, A], B),
    't1_de': ([Q, A, B], 'I don\u2019t think so, but thanks for sharing.'),
    't1_df': ([Q, A, B], LATER),
    't1_dg': ([Q, A, B, LATER], 'Glad to hear it, happy cooking!'),
    't1_dh': ([KITCHEN], 'Mine is a sourdough loaf that never rises.'),
    't1_dj': ([KITCHEN], 'First line of my answer. Second line, after a blank one.'),
}


def build(dump_dir: Path, out: Path, commit_every_lines: int = 100_000, **options) -> BuildResult:
    """Build under the fixture's rules, every split in train, unless the test asks otherwise."""
    opt = {
        'reddit_dump_dir': str(dump_dir),
        'reddit_build_dir': str(out),
        'reddit_rules': 'ours',
        'reddit_valid_fraction': 0.0,
        'reddit_test_fraction': 0.0,
        **{f'reddit_{name}': value for name, value in options.items()},
    }
    config = dataclasses.replace(config_from_opt(opt), commit_every_lines=commit_every_lines)
    return ensure_built(config)


def examples_of(result: BuildResult) -> Dict[str, List[Example]]:
    return {
        split: [e for shard in shards for e in read_shard(result.build_dir, shard.file)]
        for split, shards in result.manifest.splits.items()
    }


def as_table(examples: List[Example]) -> Dict[str, tuple]:
    return {e.comment_id: (e.context, e.response) for e in examples}


@pytest.fixture
def dump_dir(tmp_path):
    folder = tmp_path / 'dumps'
    folder.mkdir()
    for month in MONTHS:
        shutil.copy(FIXTURES / month, folder / month)
    return folder


def test_every_line_is_counted_once(dump_dir, tmp_path):
    result = build(dump_dir, tmp_path / 'out')
    assert result.built_now
    assert result.manifest.stats == FIXTURE_STATS


def test_examples_follow_reply_chains_across_months_and_file_order(dump_dir, tmp_path):
    result = build(dump_dir, tmp_path / 'out')
    assert as_table(examples_of(result)['train']) == FIXTURE_EXAMPLES


def test_the_default_rules_on_the_same_months(dump_dir, tmp_path):
    result = build(dump_dir, tmp_path / 'out', rules='recipes')
    assert result.manifest.stats == FIXTURE_STATS_RECIPES
    table = as_table(examples_of(result)['train'])
    assert {key: table[key] for key in FIXTURE_EXAMPLES} == FIXTURE_EXAMPLES
    assert table['t1_da'] == ([Q, A], '!!!! ???? !!!! ???? !!!! ????')
    assert table['t1_db'][1].startswith('Esta es una respuesta')


def test_context_is_cut_to_the_last_turns(dump_dir, tmp_path):
    result = build(dump_dir, tmp_path / 'out', max_context_turns=2)
    table = as_table(examples_of(result)['train'])
    assert table['t1_dg'] == ([B, LATER], 'Glad to hear it, happy cooking!')
    assert table['t1_d2'] == ([Q], A)


def test_turning_a_filter_off_changes_the_counts(dump_dir, tmp_path):
    stats = build(
        dump_dir, tmp_path / 'out', drop_urls=False, subreddit_blocklist=''
    ).manifest.stats
    assert stats['dropped_url'] == 0 and stats['dropped_subreddit_blocked'] == 0
    # the German comment is now caught by the language filter instead
    assert stats['dropped_non_english'] == 2 and stats['kept'] == FIXTURE_STATS['kept'] + 1


def test_shards_hold_at_most_shard_size_examples(dump_dir, tmp_path):
    result = build(dump_dir, tmp_path / 'out', shard_size=3)
    assert [s.examples for s in result.manifest.splits['train']] == [3, 3, 1]
    assert as_table(examples_of(result)['train']) == FIXTURE_EXAMPLES


@pytest.mark.parametrize(
    'compress, suffix',
    [
        (bz2.compress, '.bz2'),
        (lzma.compress, '.xz'),
        (zstandard.ZstdCompressor().compress, '.zst'),
    ],
)
def test_compressed_months_build_the_same(dump_dir, tmp_path, compress, suffix):
    packed = tmp_path / 'packed'
    packed.mkdir()
    for month in MONTHS:
        (packed / month.replace('.ndjson', suffix)).write_bytes(
            compress((dump_dir / month).read_bytes())
        )
    result = build(packed, tmp_path / 'out')
    assert result.manifest.stats == FIXTURE_STATS
    assert as_table(examples_of(result)['train']) == FIXTURE_EXAMPLES


def test_a_second_build_reuses_the_first(dump_dir, tmp_path):
    first = build(dump_dir, tmp_path / 'out')
    (dump_dir / MONTHS[0]).unlink()  # not needed any more: the manifest is complete
    second = build(dump_dir, tmp_path / 'out')
    assert not second.built_now and second.manifest == first.manifest


def test_the_index_is_deleted_unless_kept(dump_dir, tmp_path):
    assert not (build(dump_dir, tmp_path / 'a').build_dir / INDEX_FILE).exists()
    assert (build(dump_dir, tmp_path / 'b', keep_index=True).build_dir / INDEX_FILE).exists()


class Interrupt(Exception):
    """Stands in for Ctrl-C or a killed job."""


def _interrupt_after(monkeypatch, name: str, calls: int) -> List[int]:
    """Make ``build.<name>`` raise on call number ``calls + 1``; returns the call log."""
    original = getattr(build_module, name)
    log: List[int] = []

    def wrapper(*args, **kwargs):
        if len(log) == calls:
            raise Interrupt()
        log.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(build_module, name, wrapper)
    return log


def _count_calls(monkeypatch, name: str) -> List[int]:
    return _interrupt_after(monkeypatch, name, calls=10**9)


def test_interrupted_ingestion_resumes_from_the_last_commit(dump_dir, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    _interrupt_after(monkeypatch, '_ingest_line', calls=20)  # in the second month
    with pytest.raises(Interrupt):
        build(dump_dir, out, commit_every_lines=4)
    assert read_manifest(out) is None and not (out / MANIFEST).exists()
    monkeypatch.undo()
    resumed_calls = _count_calls(monkeypatch, '_ingest_line')
    result = build(dump_dir, out, commit_every_lines=4)
    # January (16 lines) was committed whole, February up to line 4 of 6
    assert len(resumed_calls) == 22 - 16 - 4
    assert result.manifest.stats == FIXTURE_STATS
    assert as_table(examples_of(result)['train']) == FIXTURE_EXAMPLES


def test_interrupted_emission_publishes_nothing_and_resumes(dump_dir, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    _interrupt_after(monkeypatch, 'write_shard', calls=2)
    with pytest.raises(Interrupt):
        build(dump_dir, out, shard_size=2)
    assert sorted(p.name for p in (out / 'train').iterdir()) == ['00000.jsonl', '00001.jsonl']
    assert read_manifest(out) is None  # what the teacher checks: no manifest, no data
    monkeypatch.undo()
    resumed_writes = _count_calls(monkeypatch, 'write_shard')
    result = build(dump_dir, out, shard_size=2)
    assert len(resumed_writes) == 2  # shards 2 and 3 of train; valid and test are empty
    assert as_table(examples_of(result)['train']) == FIXTURE_EXAMPLES


def test_an_unfinished_build_of_other_dumps_is_discarded(dump_dir, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    _interrupt_after(monkeypatch, 'write_shard', calls=1)
    with pytest.raises(Interrupt):
        build(dump_dir, out, shard_size=1)
    monkeypatch.undo()
    (dump_dir / MONTHS[1]).unlink()  # e.g. a month re-downloaded, or taken out
    result = build(dump_dir, out)
    assert result.manifest.stats['read'] == 16
    assert sorted(p.name for p in (out / 'train').iterdir()) == ['00000.jsonl']


def test_garbage_lines_are_skipped_and_counted(dump_dir, tmp_path):
    lines = (dump_dir / MONTHS[0]).read_bytes().splitlines()
    garbage = [b'\x00\xff binary', b'{"id": ', b'null', b'{"no": "fields"}']
    mixed = [
        line
        for i, line in enumerate(lines)
        for line in ([line, garbage[i % 4]] if i % 4 == 0 else [line])
    ]
    (dump_dir / MONTHS[0]).write_bytes(b'\n'.join(mixed) + b'\n')
    stats = build(dump_dir, tmp_path / 'out').manifest.stats
    added = len(mixed) - len(lines)
    assert stats['corrupt'] == FIXTURE_STATS['corrupt'] + added
    assert {k: v for k, v in stats.items() if k not in ('read', 'corrupt')} == {
        k: v for k, v in FIXTURE_STATS.items() if k not in ('read', 'corrupt')
    }


def test_a_file_that_is_mostly_not_comments_fails(dump_dir, tmp_path):
    submissions = [
        json.dumps({'id': f'x{i}', 'title': 'a submission', 'selftext': ''}) for i in range(10)
    ]
    (dump_dir / 'RC_2010-03.ndjson').write_text('\n'.join(submissions) + '\n')
    with pytest.raises(
        OptionError, match='10 of 10 lines of RC_2010-03.ndjson are not Reddit comments'
    ):
        build(dump_dir, tmp_path / 'out')
    assert read_manifest(tmp_path / 'out') is None


def test_a_truncated_month_fails_and_publishes_nothing(dump_dir, tmp_path):
    payload = zstandard.ZstdCompressor().compress((dump_dir / MONTHS[1]).read_bytes())
    (dump_dir / MONTHS[1]).unlink()
    (dump_dir / 'RC_2010-02.zst').write_bytes(payload[:-20])
    with pytest.raises(OptionError) as error:
        build(dump_dir, tmp_path / 'out')
    assert error.value.option == '--reddit-dump-dir'
    assert 'RC_2010-02.zst ends in the middle of a zstd frame' in str(error.value)
    assert read_manifest(tmp_path / 'out') is None


def _folder_with(tmp: Path, *names: str) -> Path:
    folder = tmp / 'dumps'
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b'')
    return folder


@pytest.mark.parametrize(
    'make_dir, message',
    [
        (lambda tmp: None, 'no dump folder given'),
        (lambda tmp: tmp / 'absent', 'does not exist'),
        (lambda tmp: _folder_with(tmp), 'it is empty'),
        (
            lambda tmp: _folder_with(tmp, 'RS_2019-10.zst', 'PROVENANCE.md'),
            'found only: PROVENANCE.md, RS_2019-10.zst',
        ),
    ],
)
def test_missing_or_empty_dump_folder_is_an_option_error(tmp_path, make_dir, message):
    folder = make_dir(tmp_path)
    opt = {'reddit_dump_dir': str(folder) if folder else None, 'datapath': str(tmp_path / 'data')}
    with pytest.raises(OptionError, match=message) as error:
        ensure_built(config_from_opt(opt))
    assert error.value.option == '--reddit-dump-dir'
    assert not (tmp_path / 'data').exists()


def test_default_build_dir_is_keyed_by_dumps_and_options(dump_dir, tmp_path):
    def default_dir(**options) -> Path:
        opt = {'reddit_dump_dir': str(dump_dir), 'datapath': str(tmp_path / 'data'), **options}
        return config_from_opt(opt).build_dir

    first = default_dir()
    assert first.parent == tmp_path / 'data' / 'pushshift_reddit' and first.name.startswith(
        'dumps-'
    )
    assert default_dir() == first
    assert default_dir(reddit_keep_index=True) == first  # does not change the data
    assert default_dir(reddit_min_chars=3) != first
    # the rules are part of the key: a build under the earlier rules is not reused
    assert default_dir(reddit_rules='ours') != first
    # the key follows the values, not how they were given
    assert default_dir(reddit_rules='recipes') == first
    assert default_dir(reddit_max_depth=7, reddit_max_bpe_tokens=128) == first
    assert default_dir(reddit_rules='ours', reddit_max_depth=7) != default_dir(reddit_rules='ours')
    shutil.copy(FIXTURES / MONTHS[0], dump_dir / 'RC_2010-03.ndjson')
    assert default_dir() != first  # a new month is a new build
