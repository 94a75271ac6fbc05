"""pushshift_reddit building blocks: text cleaning, filters, records, splits, dump readers."""

from __future__ import annotations

import bz2
import json
import lzma
from pathlib import Path

import pytest
import zstandard

from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit import dumps as dumps_module
from parlai_hash.tasks.pushshift_reddit.dumps import (
    DumpFile,
    TruncatedDumpError,
    decompressed_chunks,
    iter_lines,
    list_dumps,
)
from parlai_hash.tasks.pushshift_reddit.filters import CommentFilter, FilterConfig
from parlai_hash.tasks.pushshift_reddit.language import is_non_english
from parlai_hash.tasks.pushshift_reddit.records import (
    Comment,
    parse_base36,
    parse_comment,
    to_base36,
)
from parlai_hash.tasks.pushshift_reddit.splits import SPLITS, check_fractions, split_of_thread
from parlai_hash.tasks.pushshift_reddit.text import clean_body, is_garbled, repair_mojibake

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'reddit'


# -- text --------------------------------------------------------------------------------


def test_clean_body_unescapes_html_and_makes_one_line():
    assert clean_body('&gt; quoted\r\n\r\nme &amp; you\t&lt;3 ', True) == '> quoted me & you <3'
    assert clean_body('stray\x05control', True) == 'stray control'


@pytest.mark.parametrize(
    'broken, fixed',
    [
        ('don\u00e2\u0080\u0099t', 'don\u2019t'),  # UTF-8 read as Latin-1
        ('don\u00e2\u20ac\u2122t', 'don\u2019t'),  # UTF-8 read as cp1252
        ('entr\u00c3\u00a9e', 'entr\u00e9e'),
        ('caf\u00e9 and na\u00efve', 'caf\u00e9 and na\u00efve'),  # genuine accents stay
    ],
)
def test_repair_mojibake(broken, fixed):
    assert repair_mojibake(broken) == fixed


def test_mojibake_repair_can_be_turned_off():
    assert clean_body('don\u00e2\u0080\u0099t', False) != 'don\u2019t'


@pytest.mark.parametrize(
    'text, garbled',
    [
        ('A perfectly normal sentence, with punctuation!', False),
        ('...from 2002!', False),
        ('!!!! ???? !!!! ???? !!!! ????', True),
        ('bad \ufffd bytes', True),
        ('x' * 61, True),
        (
            'see ' + 'https://example.com/' + 'a' * 80,
            False,
        ),  # a long URL is the URL filter's business
    ],
)
def test_is_garbled(text, garbled):
    assert is_garbled(text) is garbled


@pytest.mark.parametrize(
    'text, non_english',
    [
        ('I think that is a good idea, but you should check it first.', False),
        ('strangely enough nobody else wanted America until Columbus came along.', False),
        ('Hola, esta es una prueba de la frase para ver si funciona', True),
        ('Das ist nicht gut und ich weiss es', True),
        ('info beasiswa dan link beasiswa dalam dan luar negeri', True),
        ('Fotografia, Zdj\u0119cia, Fotki, r\u00f3\u017cne zdj\u0119cia z \u015aremu', True),
        (
            '\u042f \u043d\u0435 \u0437\u043d\u0430\u044e, \u0447\u0442\u043e \u0441\u043a\u0430\u0437\u0430\u0442\u044c',
            True,
        ),
    ],
)
def test_is_non_english(text, non_english):
    assert is_non_english(text) is non_english


# -- filters -----------------------------------------------------------------------------


def _comment(body: str, author: str = 'someone', subreddit: str = 'AskReddit') -> Comment:
    return Comment(id=1, parent_id=None, link_id=2, body=body, author=author, subreddit=subreddit)


@pytest.mark.parametrize(
    'comment, recipes, ours',
    [
        (_comment('A fine and ordinary reply.'), None, None),
        (_comment('[removed]'), 'deleted', 'deleted'),
        (_comment('Ein Kommentar.', subreddit='de'), 'subreddit_blocked', 'subreddit_blocked'),
        # nsfw is not a language: Recipes blocks only non-English subreddits
        (_comment('A fine reply in a blocked place.', subreddit='NSFW'), None, 'subreddit_blocked'),
        (_comment('A fine reply from a bot.', author='WikiTextBot'), 'bot_author', 'bot_author'),
        (_comment('A moderator bot reply.', author='AutoModerator'), 'bot_author', 'bot_author'),
        (_comment('Look at www.example.com today.'), 'url', 'url'),
        (_comment('hey'), 'too_short', 'too_short'),
        # 2,500 characters with spaces: Recipes drops it for its 500 tokens instead
        (_comment('word ' * 500), 'too_many_tokens', 'too_long'),
        (_comment('x' * 2049), 'too_long', 'too_long'),
        (_comment('I really do think so. ' * 30), 'too_many_tokens', None),
        (_comment('\u201cQuoted\u201d is how I would put it.'), 'non_ascii_start', None),
        (_comment('#### **** #### **** ####'), None, 'garbled'),
        (_comment('Esta es una respuesta que no es para el modelo.'), None, 'non_english'),
    ],
)
def test_filters_of_each_rule_set(comment, recipes, ours):
    assert CommentFilter(FilterConfig()).apply(comment)[1] == recipes  # the defaults
    assert CommentFilter(FilterConfig.of_rules('recipes')).apply(comment)[1] == recipes
    assert CommentFilter(FilterConfig.of_rules('ours')).apply(comment)[1] == ours


def test_each_filter_can_be_turned_off():
    keep_all = CommentFilter(
        FilterConfig(
            drop_deleted=False,
            subreddit_blocklist=frozenset(),
            bot_author_regex='',
            drop_urls=False,
            min_chars=0,
            max_chars=10**6,
            max_bpe_tokens=0,
            drop_non_ascii_start=False,
            drop_garbled=False,
            drop_non_english=False,
        )
    )
    for body, author, subreddit in [
        ('[deleted]', 'x', 'AskReddit'),
        ('A reply.', 'x', 'nsfw'),
        ('A reply.', 'SomeBot', 'x'),
        ('https://example.com', 'x', 'x'),
        ('k', 'x', 'x'),
        ('word ' * 500, 'x', 'x'),
        ('x' * 3000, 'x', 'x'),
        ('\u00dcber.', 'x', 'x'),
        ('#### ****', 'x', 'x'),
        ('Esta es una respuesta que no es para el modelo.', 'x', 'x'),
    ]:
        assert keep_all.apply(_comment(body, author, subreddit))[1] is None


@pytest.mark.parametrize(
    'kwargs, option',
    [
        ({'min_chars': -1}, '--reddit-min-chars'),
        ({'min_chars': 10, 'max_chars': 5}, '--reddit-max-chars'),
        ({'bot_author_regex': '(unclosed'}, '--reddit-bot-author-regex'),
        ({'max_chars_rule': 'spaces'}, '--reddit-max-chars-rule'),
        ({'max_bpe_tokens': -1}, '--reddit-max-bpe-tokens'),
    ],
)
def test_bad_filter_options_name_the_option(kwargs, option):
    with pytest.raises(OptionError) as error:
        FilterConfig(**kwargs)
    assert error.value.option == option


@pytest.mark.parametrize(
    'valid, test, option',
    [
        (-0.1, 0.05, '--reddit-valid-fraction'),
        (0.05, 1.0, '--reddit-test-fraction'),
        (0.6, 0.5, '--reddit-valid-fraction'),
    ],
)
def test_bad_fractions_name_the_option(valid, test, option):
    with pytest.raises(OptionError) as error:
        check_fractions(valid, test)
    assert error.value.option == option


# -- records -----------------------------------------------------------------------------


def _line(**fields) -> bytes:
    record = {
        'id': 'c13',
        'body': 'hi there',
        'link_id': 't3_17863',
        'parent_id': 't1_c12',
        'author': 'frjo',
        'subreddit': 'reddit.com',
    }
    record.update(fields)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def test_parse_comment_reads_ids_as_base36_integers():
    comment = parse_comment(_line())
    assert comment == Comment(
        id=int('c13', 36),
        parent_id=int('c12', 36),
        link_id=int('17863', 36),
        body='hi there',
        author='frjo',
        subreddit='reddit.com',
    )
    assert parse_comment(_line(parent_id='t3_17863')).parent_id is None  # a reply to the submission


@pytest.mark.parametrize(
    'line',
    [
        b'{"id": "c13", "body": "cut',
        b'[1, 2, 3]',
        b'\xff\xfe not utf-8',
        _line(body=...),
        _line(body=None),
        _line(id='not-an-id'),
        _line(id='z' * 13),
        _line(link_id='17863'),
        _line(parent_id='t3_other'),
        _line(parent_id=None),
    ],
)
def test_parse_comment_rejects_what_is_not_a_comment(line):
    assert parse_comment(line) is None


def test_base36_round_trip():
    for text in ['0', 'c', 'c13', 'zz9', 'kz3abcde']:
        assert to_base36(parse_base36(text)) == text


# -- splits ------------------------------------------------------------------------------


def test_splits_are_stable_and_follow_the_fractions():
    links = range(20000)
    first = [split_of_thread(link, 0.1, 0.05) for link in links]
    assert first == [split_of_thread(link, 0.1, 0.05) for link in links]
    shares = {name: first.count(i) / len(first) for i, name in enumerate(SPLITS)}
    assert abs(shares['valid'] - 0.1) < 0.01 and abs(shares['test'] - 0.05) < 0.01
    assert all(split_of_thread(link, 0.0, 0.0) == SPLITS.index('train') for link in range(1000))


# -- dumps -------------------------------------------------------------------------------


def test_iter_lines_joins_lines_across_chunks():
    chunks = [b'{"a"', b': 1}\n{"b": 2}\n{"c', b'": 3}\n\n', b'last without newline']
    assert list(iter_lines(iter(chunks))) == [
        b'{"a": 1}',
        b'{"b": 2}',
        b'{"c": 3}',
        b'',
        b'last without newline',
    ]


def test_iter_lines_reports_an_oversized_line_without_keeping_it(monkeypatch):
    monkeypatch.setattr(dumps_module, 'MAX_LINE_BYTES', 10)
    chunks = [b'short\n', b'x' * 8, b'x' * 8, b'x' * 8, b'\nafter\n']
    assert list(iter_lines(iter(chunks))) == [b'short', None, b'after']


def test_list_dumps_reads_each_month_once(tmp_path):
    for name in [
        'RC_2006-01.zst',
        'RC_2006-01.ndjson',
        'RC_2005-12.bz2',
        'RS_2005-12.zst',
        'RS_v2_2005-06.xz',
        'RS_2006-01.zst',
        'RS_2006-01.ndjson',
        'notes.txt',
        '.hidden.zst',
    ]:
        (tmp_path / name).write_bytes(b'')
    listing = list_dumps(tmp_path)
    assert [d.name for d in listing.dumps] == ['RC_2005-12.bz2', 'RC_2006-01.ndjson']
    assert [d.name for d in listing.submissions] == [
        'RS_2005-12.zst',
        'RS_2006-01.ndjson',
        'RS_v2_2005-06.xz',
    ]
    assert set(listing.ignored) == {'RC_2006-01.zst', 'RS_2006-01.zst', 'notes.txt'}
    assert listing.inputs(read_submissions=False) == listing.dumps


def _compressed_variants(tmp_path: Path):
    """The January fixture as .bz2, .xz and two-frame .zst (and each truncated)."""
    plain = (FIXTURES / 'RC_2010-01.ndjson').read_bytes()
    half = len(plain) // 2
    zstd = zstandard.ZstdCompressor(level=3)
    payloads = {
        'RC_2010-01.bz2': bz2.compress(plain),
        'RC_2010-01.xz': lzma.compress(plain),
        # pushshift files are one frame, but concatenated frames are valid zstd too
        'RC_2010-01.zst': zstd.compress(plain[:half]) + zstd.compress(plain[half:]),
    }
    for name, payload in payloads.items():
        path = tmp_path / name
        path.write_bytes(payload)
        truncated = tmp_path / 'truncated' / name
        truncated.parent.mkdir(exist_ok=True)
        truncated.write_bytes(payload[: len(payload) * 2 // 3])
        yield path, truncated, plain


def _read_all(path: Path) -> bytes:
    return b''.join(
        decompressed_chunks(DumpFile(path, path.stem, path.stat().st_size), lambda n: None)
    )


def test_compressed_dumps_decompress_exactly(tmp_path):
    for path, _, plain in _compressed_variants(tmp_path):
        assert _read_all(path) == plain, path.name


def test_truncated_dumps_raise_instead_of_ending_early(tmp_path):
    for _, truncated, _ in _compressed_variants(tmp_path):
        with pytest.raises(TruncatedDumpError, match=truncated.name):
            _read_all(truncated)


def test_progress_counts_every_compressed_byte(tmp_path):
    for path, _, _ in _compressed_variants(tmp_path):
        seen = []
        list(decompressed_chunks(DumpFile(path, path.stem, path.stat().st_size), seen.append))
        assert sum(seen) == path.stat().st_size, path.name
