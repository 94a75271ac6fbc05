"""pushshift_reddit on the genuine dumps RC_2005-12 and RC_2006-01 (../shared/data/reddit).

Numbers checked against ``PROVENANCE.md`` there: 1,075 + 3,666 comments,
120 + 528 deleted or removed bodies, 2 comments in r/nsfw. The builds use the
default rules with 10% of threads each for valid and test, as the local
scale of ``sweeps/settings/reddit.yaml`` does (the default 1/4096 leaves these
1,569 threads nothing to validate on). ``test_reddit_rules_shared.py`` checks
each rule on these months.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import PARLAI, TINY_MODEL_ARGS, link_reddit_months
from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit.build import BuildResult, ensure_built
from parlai_hash.tasks.pushshift_reddit.config import config_from_opt
from parlai_hash.tasks.pushshift_reddit.dumps import DumpFile, decompressed_chunks, iter_lines
from parlai_hash.tasks.pushshift_reddit.records import parse_base36
from parlai_hash.tasks.pushshift_reddit.shards import Example, read_manifest, read_shard
from parlai_hash.tasks.pushshift_reddit.splits import SPLITS, split_of_thread
from parlai_hash.tasks.pushshift_reddit.stats import KEPT_COUNTERS, LINE_COUNTERS
from parlai_hash.tasks.pushshift_reddit.text import clean_body

# conftest.SHARED_DATA, spelled out as the task asks tests to locate it
REDDIT = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'reddit'
MONTHS = ('RC_2005-12', 'RC_2006-01')
#: The local sweep's valid and test fractions.
FRACTION = 0.1

pytestmark = pytest.mark.skipif(
    not all((REDDIT / f'{m}.{ext}').exists() for m in MONTHS for ext in ('zst', 'ndjson')),
    reason=f'the genuine pushshift dumps are not present: {REDDIT}/RC_2005-12.zst etc. (../shared is absent)',
)


def build(dump_dir: Path, out: Path, **options) -> BuildResult:
    opt = {
        'reddit_dump_dir': str(dump_dir),
        'reddit_build_dir': str(out),
        'reddit_valid_fraction': FRACTION,
        'reddit_test_fraction': FRACTION,
        **{f'reddit_{name}': value for name, value in options.items()},
    }
    return ensure_built(config_from_opt(opt))


def examples_by_split(result: BuildResult) -> Dict[str, List[Example]]:
    return {
        split: [e for shard in shards for e in read_shard(result.build_dir, shard.file)]
        for split, shards in result.manifest.splits.items()
    }


def raw_comments(month: str) -> Dict[str, dict]:
    with open(REDDIT / f'{month}.ndjson', encoding='utf-8') as handle:
        return {record['id']: record for record in map(json.loads, handle)}


@pytest.fixture(scope='module')
def zst_only(tmp_path_factory) -> Path:
    return link_reddit_months(tmp_path_factory.mktemp('zst_only'))


@pytest.fixture(scope='module')
def shared_build(tmp_path_factory, zst_only) -> BuildResult:
    return build(zst_only, tmp_path_factory.mktemp('built') / 'out')


def test_zst_dumps_decompress_to_the_published_ndjson():
    for month in MONTHS:
        path = REDDIT / f'{month}.zst'
        lines = list(
            iter_lines(
                decompressed_chunks(DumpFile(path, month, path.stat().st_size), lambda n: None)
            )
        )
        assert lines == (REDDIT / f'{month}.ndjson').read_bytes().splitlines()


def test_stats_of_the_two_months(shared_build):
    stats = shared_build.manifest.stats
    assert stats['read'] == 1075 + 3666
    assert stats['corrupt'] == 0 and stats['duplicate'] == 0
    assert stats['dropped_deleted'] == 120 + 528
    assert stats['dropped_subreddit_blocked'] == 0  # r/nsfw is no language: not blocked
    assert stats['read'] == sum(stats[key] for key in LINE_COUNTERS if key != 'read')
    assert stats['kept'] == sum(stats[key] for key in KEPT_COUNTERS)
    assert all(stats[f'examples_{split}'] > 0 for split in SPLITS)


def test_the_ndjson_copies_build_the_same_as_the_zst(shared_build, tmp_path):
    # The shared folder holds each month twice (.zst and .ndjson): each is read once.
    from_folder = build(REDDIT, tmp_path / 'out')
    assert from_folder.manifest.stats == shared_build.manifest.stats
    assert examples_by_split(from_folder) == examples_by_split(shared_build)


def test_threads_are_reconstructed_across_months(shared_build):
    december, january = raw_comments(MONTHS[0]), raw_comments(MONTHS[1])
    everything = {**december, **january}
    examples = [e for split in examples_by_split(shared_build).values() for e in split]
    for example in examples:
        chain = []  # the raw ancestors, nearest first
        record = everything[example.comment_id[3:]]
        while record['parent_id'].startswith('t1_') and len(chain) < len(example.context):
            record = everything[record['parent_id'][3:]]
            chain.append(clean_body(record['body'], True))
        assert example.context == chain[::-1], example.comment_id
    across = [
        e
        for e in examples
        if e.comment_id[3:] in january and january[e.comment_id[3:]]['parent_id'][3:] in december
    ]
    assert len(across) >= 5  # January replies answering December comments


def test_a_thread_never_straddles_splits(shared_build):
    threads = {
        split: {e.link_id for e in examples}
        for split, examples in examples_by_split(shared_build).items()
    }
    assert all(threads[split] for split in SPLITS)
    assert not threads['train'] & threads['valid']
    assert not threads['train'] & threads['test']
    assert not threads['valid'] & threads['test']
    for split, links in threads.items():
        assert all(
            SPLITS[split_of_thread(parse_base36(link[3:]), FRACTION, FRACTION)] == split
            for link in links
        )


def test_ten_percent_garbage_lines_are_skipped_and_counted(tmp_path):
    lines = (REDDIT / 'RC_2005-12.ndjson').read_bytes().splitlines()
    garbage = [b'{"id": "c1x", "body": "cut off', b'\x00\x9c\xff\xfe', b'<html>503</html>', b'[]']
    mixed, added = [], 0
    for i, line in enumerate(lines):
        mixed.append(line)
        if i % 9 == 0:
            mixed.append(garbage[added % len(garbage)])
            added += 1
    assert 0.09 < added / len(mixed) < 0.11
    (tmp_path / 'garbled').mkdir()
    (tmp_path / 'clean').mkdir()
    (tmp_path / 'garbled' / 'RC_2005-12.ndjson').write_bytes(b'\n'.join(mixed) + b'\n')
    os.symlink(REDDIT / 'RC_2005-12.ndjson', tmp_path / 'clean' / 'RC_2005-12.ndjson')
    garbled = build(tmp_path / 'garbled', tmp_path / 'garbled_out').manifest.stats
    clean = build(tmp_path / 'clean', tmp_path / 'clean_out').manifest.stats
    assert garbled['corrupt'] == added and garbled['read'] == clean['read'] + added
    assert {k: v for k, v in garbled.items() if k not in ('read', 'corrupt')} == {
        k: v for k, v in clean.items() if k not in ('read', 'corrupt')
    }


@pytest.fixture
def truncated_dumps(tmp_path) -> Path:
    folder = tmp_path / 'truncated'
    folder.mkdir()
    os.symlink(REDDIT / 'RC_2005-12.zst', folder / 'RC_2005-12.zst')
    payload = (REDDIT / 'RC_2006-01.zst').read_bytes()
    (folder / 'RC_2006-01.zst').write_bytes(payload[: len(payload) * 6 // 10])
    return folder


def test_a_truncated_zst_fails_and_publishes_nothing(truncated_dumps, tmp_path):
    with pytest.raises(OptionError, match='RC_2006-01.zst ends in the middle of a zstd frame'):
        build(truncated_dumps, tmp_path / 'out')
    assert read_manifest(tmp_path / 'out') is None
    assert not (tmp_path / 'out' / 'train').exists()


# -- the teacher, in this process ----------------------------------------------------------


def _teacher(datatype: str, build_dir: Path):
    from parlai.core.params import ParlaiParser
    from parlai.core.teachers import create_task_agent_from_taskname

    opt = ParlaiParser(True, False).parse_args(
        ['-t', 'pushshift_reddit', '-dt', datatype, '--reddit-build-dir', str(build_dir)]
    )
    return create_task_agent_from_taskname(opt)[0]


def test_the_teacher_streams_each_valid_example_once(shared_build):
    teacher = _teacher('valid:stream', shared_build.build_dir)
    try:
        seen = []
        while True:
            message = teacher.act()
            if message.get('epoch_done') or message.is_padding():
                break
            seen.append(message)
    finally:
        teacher.shutdown()
    expected = examples_by_split(shared_build)['valid']
    assert teacher.num_examples() == len(expected) == len(seen)
    assert sorted(m['reddit_comment_id'] for m in seen) == sorted(e.comment_id for e in expected)
    first = next(m for m in seen if m['reddit_comment_id'] == expected[0].comment_id)
    assert first['text'] == '\n'.join(expected[0].context)
    assert first['eval_labels'] == [expected[0].response] and first['episode_done']


@pytest.mark.filterwarnings('error::pytest.PytestUnhandledThreadExceptionWarning')
def test_the_teacher_trains_on_the_train_split_and_shuts_down_cleanly(shared_build):
    teacher = _teacher('train:stream', shared_build.build_dir)
    try:
        messages = [teacher.act() for _ in range(20)]
    finally:
        teacher.shutdown()
    train_ids = {e.comment_id for e in examples_by_split(shared_build)['train']}
    assert all(m['reddit_comment_id'] in train_ids and m['labels'] for m in messages)


# -- the real ``parlai`` command -------------------------------------------------------------


def parlai(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    env.pop('PARLAI_DATAPATH', None)
    return subprocess.run([PARLAI, *args], capture_output=True, text=True, env=env, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('parlai-hash: error:')]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_cli_without_a_dump_folder_says_which_option(tmp_path):
    proc = parlai('display_data', '-t', 'pushshift_reddit', '-dp', str(tmp_path))
    assert '--reddit-dump-dir: no dump folder given' in _one_error_line(proc)


def test_cli_build_of_a_truncated_zst_is_one_clear_line(truncated_dumps, tmp_path):
    proc = parlai(
        'build_reddit', '--dump-dir', str(truncated_dumps), '--out', str(tmp_path / 'out')
    )
    line = _one_error_line(proc)
    assert (
        'RC_2006-01.zst ends in the middle of a zstd frame' in line
        and 'download RC_2006-01.zst again' in line
    )
    assert read_manifest(tmp_path / 'out') is None


def test_cli_display_data_builds_and_shows_reply_chains(zst_only, tmp_path):
    proc = parlai(
        'display_data',
        '-t',
        'pushshift_reddit',
        '--reddit-dump-dir',
        str(zst_only),
        '-dp',
        str(tmp_path),
        '-n',
        '3',
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = proc.stdout + proc.stderr
    assert shown.count('NEW EPISODE: pushshift_reddit') == 3
    assert 'examples: train' in shown  # the stats table of the build
    built = list((tmp_path / 'pushshift_reddit').iterdir())
    assert len(built) == 1 and built[0].name.startswith('zst_only') and read_manifest(built[0])


def test_cli_train_model_runs_on_the_dumps(zst_only, tmp_path):
    model = tmp_path / 'model'
    proc = parlai(
        'train_model',
        '-m',
        'hash_generator',
        '-t',
        'pushshift_reddit',
        '--reddit-dump-dir',
        str(zst_only),
        '-dp',
        str(tmp_path / 'data'),
        '-dt',
        'train:stream',
        '-mf',
        str(model),
        *TINY_MODEL_ARGS,
        '--n-layers',
        '2',  # the later flag wins: two layers are enough here
        '--truncate',
        '64',
        '-bs',
        '8',
        '--max-train-steps',
        '6',
        '-vstep',
        '6',
        '--validation-max-exs',
        '8',
        '--short-final-eval',
        'true',
        '--skip-generation',
        'true',
        '-vmt',
        'ppl',
        '--dict-maxexs',
        '300',
        # the default 1/4096 of threads leaves these two months no valid split
        '--reddit-valid-fraction',
        str(FRACTION),
        '--reddit-test-fraction',
        str(FRACTION),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert model.exists() and (tmp_path / 'model.dict').exists()
    with open(str(model) + '.trainstats') as handle:
        trainstats = json.load(handle)
    assert trainstats['train_steps'] == 6
    assert (
        trainstats['final_valid_report']['exs'] == 8
        and trainstats['final_valid_report']['loss'] > 0
    )
    with open(str(model) + '.opt') as handle:
        opt = json.load(handle)
    assert opt['task'] == 'pushshift_reddit' and opt['reddit_dump_dir'] == str(zst_only)
