"""The Recipes rules (``--reddit-rules recipes``, the default) on hand-written data.

``tests/fixtures/reddit_recipes/README.md`` lists what each fixture line is
for and its outcome under the default rules; the expectations below follow
from that table.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Dict, List

import pytest

from parlai_hash.dictionaries import save_bpe, train_bytelevel_bpe
from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit import build as build_module
from parlai_hash.tasks.pushshift_reddit.build import BuildResult, ensure_built
from parlai_hash.tasks.pushshift_reddit.config import DEFAULTS, config_from_opt
from parlai_hash.tasks.pushshift_reddit.filters import FilterConfig
from parlai_hash.tasks.pushshift_reddit.records import Submission, parse_submission
from parlai_hash.tasks.pushshift_reddit.rules import RULE_SETS
from parlai_hash.tasks.pushshift_reddit.shards import read_manifest, read_shard
from parlai_hash.tasks.pushshift_reddit.splits import SPLITS, split_of_thread
from parlai_hash.tasks.pushshift_reddit.text import starts_with_non_ascii
from parlai_hash.tasks.pushshift_reddit.tokens import TokenLimit, token_counter

FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'reddit_recipes'
FILES = ('RC_2011-01.ndjson', 'RS_2011-01.ndjson')

TITLE = 'What is your favourite board game, and why?'
CHAIN = [
    'Chess, because every game is different.',
    'Every game is different, but the openings repeat.',
    'Only if you play the same people all the time.',
    'Which is what most of us do, to be fair.',
    'Then find a club, there is one in every town.',
    'Clubs are great until you meet the regulars.',
    'The regulars are the reason to go, in my experience.',
    'Now we are eight replies deep and still talking chess.',
    'Nine replies deep: this is where the thread should stop.',
]
LONG_WITH_SPACES = 'Supercalifragilistic ' * 99 + 'Supercalifragilistic.'
NO_POST = 'A reply to a post that no submission file holds.'

EXPECTED_STATS = {
    'read': 19,
    'corrupt': 0,
    'duplicate': 0,
    'dropped_deleted': 0,
    'dropped_subreddit_blocked': 0,
    'dropped_bot_author': 0,
    'dropped_url': 0,
    'dropped_too_short': 0,
    'dropped_too_long': 1,  # g2
    'dropped_non_ascii_start': 1,  # f1
    'dropped_garbled': 0,
    'dropped_non_english': 0,
    'dropped_too_many_tokens': 1,  # g3
    'kept': 16,
    'kept_top_level': 1,  # m1
    'kept_parent_missing': 0,
    'kept_ancestor_dropped': 4,  # f2; h1, h2 (bot's post); k1 (post starting with “)
    'kept_too_deep': 2,  # e8, e9
    'examples_train': 9,
    'examples_valid': 0,
    'examples_test': 0,
    'submissions_read': 5,
    'submissions_corrupt': 1,
    'submissions_duplicate': 1,
    'submissions_dropped': 2,
    'submissions_kept': 1,
}
EXPECTED_EXAMPLES = {
    **{f't1_e{depth}': ([TITLE, *CHAIN[: depth - 1]], CHAIN[depth - 1]) for depth in range(1, 8)},
    't1_g1': ([TITLE, CHAIN[0]], LONG_WITH_SPACES.strip()),
    't1_m2': ([NO_POST], 'So this reply has only that comment as context.'),
}


@pytest.fixture
def dump_dir(tmp_path) -> Path:
    folder = tmp_path / 'dumps'
    folder.mkdir()
    for name in FILES:
        shutil.copy(FIXTURE / name, folder / name)
    return folder


def build(dump_dir: Path, out: Path, commit_every_lines: int = 100_000, **options) -> BuildResult:
    """Build with the default rules and every split in train, unless the test asks otherwise."""
    opt = {
        'reddit_dump_dir': str(dump_dir),
        'reddit_build_dir': str(out),
        'reddit_valid_fraction': 0.0,
        'reddit_test_fraction': 0.0,
        **{f'reddit_{name}': value for name, value in options.items()},
    }
    config = dataclasses.replace(config_from_opt(opt), commit_every_lines=commit_every_lines)
    return ensure_built(config)


def examples(result: BuildResult) -> Dict[str, tuple]:
    return {
        e.comment_id: (e.context, e.response)
        for shard in result.manifest.splits['train']
        for e in read_shard(result.build_dir, shard.file)
    }


# -- the whole fixture ----------------------------------------------------------------------


def test_every_rule_on_the_fixture(dump_dir, tmp_path):
    result = build(dump_dir, tmp_path / 'out')
    assert result.manifest.stats == EXPECTED_STATS
    assert examples(result) == EXPECTED_EXAMPLES


def test_the_earlier_rules_on_the_fixture(dump_dir, tmp_path):
    result = build(dump_dir, tmp_path / 'out', rules='ours')
    table = examples(result)
    stats = result.manifest.stats
    # any length over 2,048 characters, no token limit, no first-character rule, no depth limit
    assert stats['dropped_too_long'] == 2 and 't1_g1' not in table
    assert table['t1_g3'][1].startswith('I really do think so.')
    assert table['t1_f1'][1].startswith('\u00dcber cool')
    assert table['t1_k1'] == (['\u201cQuotes\u201d you live by?'], 'Be kind, it costs nothing.')
    # deeper than 7 is kept, with the last seven turns as context
    assert table['t1_e9'] == (CHAIN[1:8], CHAIN[8])
    assert stats['kept_too_deep'] == 0 and stats['submissions_dropped'] == 1  # the bot's post


@pytest.mark.parametrize('max_depth, deepest', [(8, 8), (0, 9), (3, 3)])
def test_the_depth_limit_counts_a_reply_to_the_post_as_depth_one(
    dump_dir, tmp_path, max_depth, deepest
):
    result = build(dump_dir, tmp_path / 'out', max_depth=max_depth)
    chain = {key for key in examples(result) if key.startswith('t1_e')}
    assert chain == {f't1_e{depth}' for depth in range(1, deepest + 1)}
    assert result.manifest.stats['kept_too_deep'] == 9 - deepest


def test_context_turns_can_be_limited(dump_dir, tmp_path):
    table = examples(build(dump_dir, tmp_path / 'out', max_context_turns=2))
    assert table['t1_e7'] == (CHAIN[4:6], CHAIN[6])
    assert table['t1_e1'] == ([TITLE], CHAIN[0])


def test_without_post_titles_replies_to_the_post_are_context_only(dump_dir, tmp_path):
    with_titles = build(dump_dir, tmp_path / 'a')
    without = build(dump_dir, tmp_path / 'b', post_titles=False)
    table = examples(without)
    assert 't1_e1' not in table and table['t1_e2'] == ([CHAIN[0]], CHAIN[1])
    # the posts' rules no longer apply: the bot's and the “Quotes” threads are kept
    assert table['t1_h2'] == (
        ['A reply in the thread that a bot posted.'],
        'And a reply to that reply.',
    )
    stats = without.manifest.stats
    assert stats['submissions_read'] == 0 and stats['kept_top_level'] == 4
    # and the same folder without the RS_ file builds the same
    (dump_dir / FILES[1]).unlink()
    no_file = build(dump_dir, tmp_path / 'c')
    assert no_file.manifest.stats == stats
    assert examples(no_file) == table
    assert with_titles.manifest.stats != stats


def test_submission_files_are_part_of_the_default_build_key(dump_dir, tmp_path):
    def default_dir(**options) -> Path:
        opt = {'reddit_dump_dir': str(dump_dir), 'datapath': str(tmp_path / 'data'), **options}
        return config_from_opt(opt).build_dir

    with_posts = default_dir()
    assert default_dir(reddit_post_titles=False) != with_posts
    without_posts = default_dir(reddit_post_titles=False)
    (dump_dir / FILES[1]).unlink()
    assert default_dir() != with_posts
    assert default_dir(reddit_post_titles=False) == without_posts  # not read, so not keyed


# -- BPE token counts -----------------------------------------------------------------------


@pytest.fixture(scope='module')
def small_bpe(tmp_path_factory):
    """A 300-token byte-level BPE: too small to hold 'Supercalifragilistic' in one token."""
    texts = [json.loads(line)['body'] for line in (FIXTURE / FILES[0]).open(encoding='utf-8')]
    tokenizer = train_bytelevel_bpe([t for t in texts if 'Supercali' not in t], 300, 2)
    return save_bpe(tokenizer, tmp_path_factory.mktemp('bpe'))


def test_a_bpe_vocabulary_counts_exactly(dump_dir, tmp_path, small_bpe):
    result = build(
        dump_dir, tmp_path / 'out', bpe_vocab=str(small_bpe.vocab), bpe_merge=str(small_bpe.merges)
    )
    # g1's 101 pre-tokens are several hundred tokens of this vocabulary
    assert result.manifest.stats['dropped_too_many_tokens'] == 2
    assert 't1_g1' not in examples(result)


def test_the_vocabulary_is_part_of_the_build_key(dump_dir, tmp_path, small_bpe):
    def default_dir(**options) -> Path:
        opt = {'reddit_dump_dir': str(dump_dir), 'datapath': str(tmp_path / 'data'), **options}
        return config_from_opt(opt).build_dir

    files = {'reddit_bpe_vocab': str(small_bpe.vocab), 'reddit_bpe_merge': str(small_bpe.merges)}
    assert default_dir(**files) != default_dir()
    # the same files elsewhere are the same vocabulary
    moved = tmp_path / 'moved'
    moved.mkdir()
    for option, path in files.items():
        shutil.copy(path, moved / Path(path).name)
    assert default_dir(
        reddit_bpe_vocab=str(moved / 'vocab.json'), reddit_bpe_merge=str(moved / 'merges.txt')
    ) == default_dir(**files)
    # with the limit off, the vocabulary changes nothing
    assert default_dir(reddit_max_bpe_tokens=0, **files) == default_dir(reddit_max_bpe_tokens=0)


def test_pre_tokens_are_a_lower_bound_of_bpe_tokens(small_bpe):
    exact, lower = token_counter(small_bpe), token_counter(None)
    texts = [json.loads(line)['body'] for line in (FIXTURE / FILES[0]).open(encoding='utf-8')]
    texts += ['Hello, world!  Two  spaces.', '\u00dcber caf\u00e9 \U0001f600', '1234567890' * 5, '']
    assert all(exact(text) >= lower(text) for text in texts)
    assert lower('I really do think so.') == 6


def test_token_limit_is_strictly_longer_than():
    limit = TokenLimit(6, None)
    assert not limit.exceeded('I really do think so.')  # exactly 6
    assert limit.exceeded('I really do think so!!!! Yes.')
    assert not TokenLimit(0, None).exceeded('word ' * 1000)


# -- units --------------------------------------------------------------------------------------


def test_the_defaults_are_the_recipes_rules():
    recipes = RULE_SETS['recipes']
    assert FilterConfig() == FilterConfig.of_rules('recipes')
    assert (DEFAULTS.max_depth, DEFAULTS.max_context_turns) == (7, 0)
    assert DEFAULTS.valid_fraction == DEFAULTS.test_fraction == 1 / 4096
    assert config_from_opt({'reddit_build_dir': '/tmp/x'}) == dataclasses.replace(
        DEFAULTS, build_dir=Path('/tmp/x').resolve()
    )
    assert recipes.max_bpe_tokens == 128 and 'nsfw' not in FilterConfig().subreddit_blocklist


def test_one_chunk_of_4096_each_for_valid_and_test():
    fraction = RULE_SETS['recipes'].valid_fraction
    splits = [split_of_thread(link, fraction, fraction) for link in range(200_000)]
    for name in ('valid', 'test'):
        share = splits.count(SPLITS.index(name)) / len(splits)
        assert abs(share - 1 / 4096) < 0.3 / 4096, (name, share)


@pytest.mark.parametrize(
    'text, non_ascii',
    [('Plain', False), ('\u201cQuoted\u201d', True), ('\u00c7a va', True), ('\U0001f600 hi', True),
     ('caf\u00e9', False), ('', False)],
)
def test_starts_with_non_ascii(text, non_ascii):
    assert starts_with_non_ascii(text) is non_ascii


def test_parse_submission():
    line = json.dumps({'id': 'dbkqm2', 'title': 'Escaping abuse.', 'selftext': '[removed]',
                       'author': 'someone', 'subreddit': 'AskWomen'}).encode()
    expected = Submission(int('dbkqm2', 36), 'Escaping abuse.', 'someone', 'AskWomen')
    assert parse_submission(line) == expected
    for bad in [b'{"id": "s1", "title": "cut', b'[]', b'{"id": "s1"}', b'{"title": "no id"}',
                b'{"id": "not an id", "title": "x"}', b'{"id": "s1", "title": null}']:
        assert parse_submission(bad) is None, bad


def _opt(tmp_path: Path, **options) -> dict:
    return {'reddit_build_dir': str(tmp_path / 'out'),
            **{f'reddit_{name}': value for name, value in options.items()}}


@pytest.mark.parametrize(
    'options, option',
    [
        ({'rules': 'blender'}, '--reddit-rules'),
        ({'max_depth': -1}, '--reddit-max-depth'),
        ({'max_context_turns': -1}, '--reddit-max-context-turns'),
        ({'max_bpe_tokens': -5}, '--reddit-max-bpe-tokens'),
        ({'max_chars_rule': 'nospace'}, '--reddit-max-chars-rule'),
        ({'bpe_vocab': 'vocab.json'}, '--reddit-bpe-merge'),
        ({'bpe_merge': 'merges.txt'}, '--reddit-bpe-vocab'),
        ({'bpe_vocab': '/absent/vocab.json', 'bpe_merge': '/absent/m.txt'}, '--reddit-bpe-vocab'),
    ],
)
def test_bad_rule_options_name_the_option(tmp_path, options, option):
    with pytest.raises(OptionError) as error:
        config_from_opt(_opt(tmp_path, **options))
    assert error.value.option == option
    assert '\n' not in str(error.value)


def test_unloadable_bpe_files_are_an_option_error(tmp_path):
    (tmp_path / 'vocab.json').write_text('not json')
    (tmp_path / 'merges.txt').write_text('')
    with pytest.raises(OptionError, match='cannot load') as error:
        files = {'bpe_vocab': str(tmp_path / 'vocab.json'), 'bpe_merge': str(tmp_path / 'merges.txt')}
        config_from_opt(_opt(tmp_path, **files))
    assert error.value.option == '--reddit-bpe-vocab'


def test_the_options_are_in_both_helps():
    from parlai.core.params import ParlaiParser

    from parlai_hash.scripts.build_reddit import BuildReddit

    teacher = ParlaiParser(True, False)
    teacher.add_extra_args(['-t', 'pushshift_reddit'])
    for text in (BuildReddit.setup_args().format_help(), teacher.format_help()):
        start = text.index('pushshift.io Reddit (-t pushshift_reddit)')
        text = text[start:].split('\n\n')[0]  # this task's group of options
        for option in ('--reddit-rules', '--reddit-max-depth', '--reddit-post-titles',
                       '--reddit-max-chars-rule', '--reddit-max-bpe-tokens', '--reddit-bpe-vocab',
                       '--reddit-bpe-merge', '--reddit-drop-non-ascii-start'):
            assert option in text, option
        # the rule sets' defaults are spelled out, not shown as ParlAI's "(default: None)"
        flat = ' '.join(text.split())
        by_rules = re.findall(r'Default: from --reddit- ?rules \([^)]*\)\.( \(default)?', flat)
        assert len(by_rules) == 10 and not any(by_rules)


# -- robustness with submissions ------------------------------------------------------------------


class Interrupt(Exception):
    """Stands in for Ctrl-C or a killed job."""


def test_an_interrupted_build_with_submissions_resumes(dump_dir, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    original = build_module._ingest_line
    calls: List[int] = []

    def interrupted(*args, **kwargs):
        if len(calls) == 12:
            raise Interrupt()
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(build_module, '_ingest_line', interrupted)
    with pytest.raises(Interrupt):
        build(dump_dir, out, commit_every_lines=5)
    assert read_manifest(out) is None
    monkeypatch.undo()
    result = build(dump_dir, out, commit_every_lines=5)
    assert result.manifest.stats == EXPECTED_STATS
    assert examples(result) == EXPECTED_EXAMPLES


def test_a_submissions_file_that_is_mostly_not_submissions_fails(dump_dir, tmp_path):
    shutil.copy(FIXTURE / FILES[0], dump_dir / 'RS_2011-02.ndjson')  # comments have no title
    message = '19 of 19 lines of RS_2011-02.ndjson are not Reddit submissions'
    with pytest.raises(OptionError, match=message):
        build(dump_dir, tmp_path / 'out')
    assert read_manifest(tmp_path / 'out') is None


def test_cli_bad_rule_option_is_one_line(dump_dir, tmp_path, cli_env):
    from conftest import run_parlai

    proc = run_parlai('build_reddit', '--dump-dir', str(dump_dir), '--out', str(tmp_path / 'out'),
                      '--reddit-max-depth', '-1', check=False, env=cli_env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith('parlai-hash: error:')]
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert errors == ['parlai-hash: error: --reddit-max-depth: got -1; use 0 (no limit) or more']
