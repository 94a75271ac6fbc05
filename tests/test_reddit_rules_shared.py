"""Each Recipes rule on the genuine dumps in ../shared/data/reddit (see its PROVENANCE.md).

The comment months RC_2005-12 and RC_2006-01 (4,741 comments, all in
r/reddit.com but 2 in r/nsfw) and the r/AskWomen submissions of 2019-10
(8,271 posts, no matching comments). Every expected count is computed here
from the raw records, independently of the builder, and each rule is checked
in the built examples: no response or context turn breaks it.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import zstandard

from conftest import link_reddit_months
from parlai_hash.dictionaries import save_bpe, train_bytelevel_bpe
from parlai_hash.tasks.pushshift_reddit.build import BuildResult, ensure_built
from parlai_hash.tasks.pushshift_reddit.config import config_from_opt
from parlai_hash.tasks.pushshift_reddit.filters import CommentFilter, FilterConfig
from parlai_hash.tasks.pushshift_reddit.shards import Example, read_shard
from parlai_hash.tasks.pushshift_reddit.text import clean_body
from parlai_hash.tasks.pushshift_reddit.tokens import token_counter

REDDIT = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'reddit'
MONTHS = ('RC_2005-12', 'RC_2006-01')
POSTS = REDDIT / 'rs_2019-10_askwomen_subset' / 'RS_2019-10.zst'

pytestmark = pytest.mark.skipif(
    not all((REDDIT / f'{m}.ndjson').exists() for m in MONTHS) or not POSTS.exists(),
    reason=f'the genuine pushshift dumps are not present: {REDDIT}/RC_2005-12.ndjson etc. '
    '(../shared is absent)',
)

DELETED = {'[deleted]', '[removed]', '[deleted by user]'}
URL = re.compile(r'(?i)\b(?:https?://|ftp://|www\.)')
#: Every text rule off: what is left to cut a chain is the dumps themselves.
NO_TEXT_RULES = dict(
    drop_deleted=False, subreddit_blocklist='', bot_author_regex='', drop_urls=False,
    min_chars=0, max_bpe_tokens=0, drop_non_ascii_start=False,
)


def build(dump_dir: Path, out: Path, **options) -> BuildResult:
    """Every split in train, so that every example is in one list."""
    opt = {
        'reddit_dump_dir': str(dump_dir),
        'reddit_build_dir': str(out),
        'reddit_valid_fraction': 0.0,
        'reddit_test_fraction': 0.0,
        **{f'reddit_{name}': value for name, value in options.items()},
    }
    return ensure_built(config_from_opt(opt))


def examples_of(result: BuildResult) -> List[Example]:
    return [
        e
        for shards in result.manifest.splits.values()
        for shard in shards
        for e in read_shard(result.build_dir, shard.file)
    ]


def turns(examples: List[Example]) -> List[str]:
    """Every response and context turn."""
    return [text for e in examples for text in (*e.context, e.response)]


class Raw:
    """The raw comments of both months: cleaned text and depth, computed here."""

    def __init__(self):
        self.records: Dict[str, dict] = {}
        for month in MONTHS:
            with open(REDDIT / f'{month}.ndjson', encoding='utf-8') as handle:
                for record in map(json.loads, handle):
                    self.records[record['id']] = record
        self.text = {key: clean_body(r['body'], True) for key, r in self.records.items()}

    def depth(self, key: str) -> Optional[int]:
        """1 for a reply to the post; None when an ancestor is not in the dumps."""
        depth = 1
        parent = self.records[key]['parent_id']
        while parent.startswith('t1_'):
            if parent[3:] not in self.records:
                return None
            depth += 1
            parent = self.records[parent[3:]]['parent_id']
        return depth


def real_posts() -> List[dict]:
    with open(POSTS, 'rb') as handle:
        stream = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(handle)
        return [json.loads(line) for line in io.TextIOWrapper(stream, encoding='utf-8')]


@pytest.fixture(scope='module')
def raw() -> Raw:
    return Raw()


@pytest.fixture(scope='module')
def months(tmp_path_factory) -> Path:
    return link_reddit_months(tmp_path_factory.mktemp('months'))


@pytest.fixture(scope='module')
def recipes(months, tmp_path_factory) -> BuildResult:
    return build(months, tmp_path_factory.mktemp('recipes') / 'out')


@pytest.fixture(scope='module')
def ours(months, tmp_path_factory) -> BuildResult:
    return build(months, tmp_path_factory.mktemp('ours') / 'out', rules='ours')


@pytest.fixture(scope='module')
def month_bpe(raw, tmp_path_factory):
    """An 8,000-token byte-level BPE (the paper's size) trained on these months."""
    tokenizer = train_bytelevel_bpe(list(raw.text.values()), 8000, 2)
    return save_bpe(tokenizer, tmp_path_factory.mktemp('bpe'))


# -- measured counts -------------------------------------------------------------------------


def test_counts_of_the_two_months_under_each_rule_set(recipes, ours, months, tmp_path):
    stats = recipes.manifest.stats
    assert {k: v for k, v in stats.items() if v} == {
        'read': 4741,
        'dropped_deleted': 648,
        'dropped_url': 387,
        'dropped_too_short': 27,
        'dropped_too_many_tokens': 361,
        'kept': 3318,
        'kept_top_level': 2218,
        'kept_parent_missing': 27,
        'kept_ancestor_dropped': 438,
        'examples_train': 635,
    }
    # the earlier rules still give the earlier build, example for example
    assert {k: v for k, v in ours.manifest.stats.items() if v} == {
        'read': 4741,
        'dropped_deleted': 648,
        'dropped_subreddit_blocked': 2,
        'dropped_url': 387,
        'dropped_too_short': 27,
        'dropped_too_long': 25,
        'dropped_garbled': 2,
        'dropped_non_english': 2,
        'kept': 3648,
        'kept_top_level': 2373,
        'kept_parent_missing': 30,
        'kept_ancestor_dropped': 370,
        'examples_train': 875,
    }
    # the local sweep's 10% of threads each for valid and test
    local = build(months, tmp_path / 'local', valid_fraction=0.1, test_fraction=0.1)
    assert [local.manifest.examples(s) for s in ('train', 'valid', 'test')] == [523, 65, 47]
    # the default 1/4096 of these 1,569 threads puts no example in valid or test
    default = build(months, tmp_path / 'default', valid_fraction=None, test_fraction=None)
    assert [default.manifest.examples(s) for s in ('train', 'valid', 'test')] == [635, 0, 0]


# -- each rule -------------------------------------------------------------------------------


def test_deleted_or_removed_comments_are_dropped(recipes, ours, raw):
    deleted = sum(text in DELETED for text in raw.text.values())
    assert deleted == 120 + 528  # PROVENANCE.md
    for result in (recipes, ours):
        assert result.manifest.stats['dropped_deleted'] == deleted
        assert not DELETED & set(turns(examples_of(result)))


def test_only_non_english_subreddits_are_blocked(recipes, ours, raw, months, tmp_path):
    nsfw = [key for key, r in raw.records.items() if r['subreddit'] == 'nsfw']
    assert len(nsfw) == 2
    assert recipes.manifest.stats['dropped_subreddit_blocked'] == 0  # nsfw is no language
    assert ours.manifest.stats['dropped_subreddit_blocked'] == 2
    named = build(months, tmp_path / 'out', subreddit_blocklist='r/NSFW')
    assert named.manifest.stats['dropped_subreddit_blocked'] == 2


def test_bot_authors_are_dropped(raw, months, tmp_path):
    # No known bot wrote in 2005-06, so a regex names a real author instead.
    assert not any(re.search(r'(?i)^(automoderator|autotldr)$|bot$', r['author'])
                   for r in raw.records.values())
    theirs = [key for key, r in raw.records.items() if r['author'] == 'enjahova']
    expected = sum(raw.text[key] not in DELETED for key in theirs)
    result = build(months, tmp_path / 'out', bot_author_regex='^enjahova$')
    assert result.manifest.stats['dropped_bot_author'] == expected > 40
    assert not {f't1_{key}' for key in theirs} & {e.comment_id for e in examples_of(result)}


def _passes_earlier_rules(raw: Raw, key: str) -> bool:
    text = raw.text[key]
    return text not in DELETED and not URL.search(text) and len(text) >= 5


def test_long_comments_are_dropped_only_without_spaces(recipes, ours, raw):
    long = [k for k in raw.text if _passes_earlier_rules(raw, k) and len(raw.text[k]) > 2048]
    assert len(long) == 25 and all(' ' in raw.text[key] for key in long)
    assert recipes.manifest.stats['dropped_too_long'] == 0
    assert ours.manifest.stats['dropped_too_long'] == 25
    # Recipes drops them all the same, as far longer than 128 tokens
    lower_bound = token_counter(None)
    assert all(lower_bound(raw.text[key]) > 128 for key in long)
    responses = {e.comment_id for e in examples_of(recipes)}
    assert not {f't1_{key}' for key in long} & responses


def test_comments_over_128_bpe_tokens_are_dropped(recipes, raw):
    lower_bound = token_counter(None)
    over = [k for k in raw.text if _passes_earlier_rules(raw, k) and lower_bound(raw.text[k]) > 128]
    assert recipes.manifest.stats['dropped_too_many_tokens'] == len(over) == 361
    assert max(lower_bound(text) for text in turns(examples_of(recipes))) <= 128


def test_a_bpe_vocabulary_drops_at_least_as_many(recipes, months, month_bpe, tmp_path, raw):
    exact = token_counter(month_bpe)
    result = build(
        months, tmp_path / 'out', bpe_vocab=str(month_bpe.vocab), bpe_merge=str(month_bpe.merges)
    )
    over = [k for k in raw.text if _passes_earlier_rules(raw, k) and exact(raw.text[k]) > 128]
    dropped = result.manifest.stats['dropped_too_many_tokens']
    assert dropped == len(over) > recipes.manifest.stats['dropped_too_many_tokens']
    assert max(exact(text) for text in turns(examples_of(result))) <= 128


def test_short_comments_and_urls_are_dropped(recipes, ours, raw):
    urls = sum(text not in DELETED and bool(URL.search(text)) for text in raw.text.values())
    short = sum(
        text not in DELETED and not URL.search(text) and len(text) < 5 for text in raw.text.values()
    )
    for result in (recipes, ours):
        stats = result.manifest.stats
        assert (stats['dropped_url'], stats['dropped_too_short']) == (urls, short) == (387, 27)
        texts = turns(examples_of(result))
        assert min(map(len, texts)) >= 5 and not any(URL.search(text) for text in texts)


def test_texts_starting_with_a_non_ascii_character_are_dropped(recipes, raw):
    # No 2005-06 comment starts so; 2019 titles do, and pass the same rules.
    assert not any(text and not text[0].isascii() for text in raw.text.values())
    assert recipes.manifest.stats['dropped_non_ascii_start'] == 0
    reasons = Counter()
    starting = 0
    comment_filter = CommentFilter(FilterConfig())
    for post in real_posts():
        title, reason = comment_filter.check(post['title'], post['author'], post['subreddit'])
        reasons[reason] += 1
        starting += reason in (None, 'non_ascii_start') and not title[0].isascii()
    assert reasons['non_ascii_start'] == starting == 7


def test_comments_deeper_than_7_are_dropped(raw, months, tmp_path, recipes):
    depths = {key: raw.depth(key) for key in raw.records}
    # PROVENANCE.md's deepest replies (11 in December, 12 in January) count the same way
    assert max(d for d in depths.values() if d) == 12
    deep = [key for key, depth in depths.items() if depth and depth > 7]
    # with every text rule off, only the depth rule removes these
    result = build(months, tmp_path / 'out', **NO_TEXT_RULES)
    assert result.manifest.stats['kept_too_deep'] == len(deep) > 20
    unlimited = build(months, tmp_path / 'unlimited', max_depth=0, **NO_TEXT_RULES)
    assert unlimited.manifest.examples('train') == result.manifest.examples('train') + len(deep)
    for built in (result, recipes):
        for example in examples_of(built):
            depth = depths[example.comment_id[3:]]
            # the whole thread is the context: every comment above, no post titles here
            assert depth <= 7 and len(example.context) == depth - 1


# -- submissions -----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def posts(raw, tmp_path_factory) -> Path:
    """The two months and the real r/AskWomen submissions in one folder."""
    folder = tmp_path_factory.mktemp('posts')
    for month in MONTHS:
        os.symlink(REDDIT / f'{month}.zst', folder / f'{month}.zst')
    os.symlink(POSTS, folder / POSTS.name)
    return folder


def test_real_submissions_are_read_and_filtered(posts, recipes, tmp_path, raw):
    result = build(posts, tmp_path / 'out')
    stats = result.manifest.stats
    comment_filter = CommentFilter(FilterConfig())
    dropped = sum(
        comment_filter.check(p['title'], p['author'], p['subreddit'])[1] is not None
        for p in real_posts()
    )
    assert (stats['submissions_read'], stats['submissions_corrupt']) == (8271, 0)
    assert (stats['submissions_dropped'], stats['submissions_kept']) == (dropped, 8271 - dropped)
    # 2019 posts head no 2005-06 thread: the comments build as without them
    assert {int(p['id'], 36) for p in real_posts()}.isdisjoint(
        int(r['link_id'][3:], 36) for r in raw.records.values()
    )
    assert examples_of(result) == examples_of(recipes)

    def comment_counts(counts: Dict[str, int]) -> Dict[str, int]:
        return {k: v for k, v in counts.items() if not k.startswith('submissions_')}

    assert comment_counts(stats) == comment_counts(recipes.manifest.stats)


def test_real_titles_are_the_first_context_turn(posts, tmp_path):
    comment_filter = CommentFilter(FilterConfig())
    kept = [
        p
        for p in real_posts()
        if comment_filter.check(p['title'], p['author'], p['subreddit'])[1] is None
    ]
    folder = tmp_path / 'dumps'
    folder.mkdir()
    os.symlink(POSTS, folder / POSTS.name)
    replies = []
    for number, post in enumerate(kept[:3]):
        top, below = f'zz{number}a', f'zz{number}b'
        thread = f"t3_{post['id']}"
        replies.append({'id': top, 'parent_id': thread, 'link_id': thread, 'author': 'a',
                        'subreddit': 'AskWomen', 'body': 'My answer to the question in the title.'})
        replies.append({'id': below, 'parent_id': f't1_{top}', 'link_id': thread, 'author': 'b',
                        'subreddit': 'AskWomen', 'body': 'A reply to that answer.'})
    (folder / 'RC_2019-10.ndjson').write_text('\n'.join(map(json.dumps, replies)) + '\n')
    table = {e.comment_id: e.context for e in examples_of(build(folder, tmp_path / 'out'))}
    for number, post in enumerate(kept[:3]):
        title = clean_body(post['title'], True)
        assert table[f't1_zz{number}a'] == [title]
        assert table[f't1_zz{number}b'] == [title, 'My answer to the question in the title.']
