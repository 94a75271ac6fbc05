"""Splitting WikiText into articles and articles into LM examples (no ParlAI)."""

from pathlib import Path

import pytest

from conftest import SHARED_DATA, requires_shared
from parlai_hash.tasks.wikitext103.articles import EOS, read_articles, title_of
from parlai_hash.tasks.wikitext103.examples import NO_CONTEXT, article_examples, chunks
from parlai_hash.tasks.wikitext103.splits import carved_split

FIXTURE = Path(__file__).parent / 'fixtures' / 'wikitext' / 'wiki.valid.tokens'
WT103_VALID = SHARED_DATA / 'wikitext-103' / 'wiki.valid.tokens'
WT2_VALID = SHARED_DATA / 'wikitext-2' / 'wiki.valid.tokens'


def lines_of(path):
    with open(path, encoding='utf-8') as f:
        return f.read().splitlines()


def test_title_of_tells_titles_from_sections():
    assert title_of(' = Homarus gammarus = ') == 'Homarus gammarus'
    assert title_of(' = M @-@ 82 ( Michigan highway ) = ') == 'M @-@ 82 ( Michigan highway )'
    assert title_of(' = = Description = = ') is None
    assert title_of(' = = = Television roles = = = ') is None
    assert title_of(' Homarus gammarus is a lobster . ') is None


def test_fixture_articles_partition_the_file_and_start_at_the_blank_before_the_title():
    lines = lines_of(FIXTURE)
    articles = list(read_articles(lines))
    assert [line for a in articles for line in a.lines] == lines
    assert len(articles) == 12
    assert articles[0].title == 'Lake Vostrava' and articles[-1].title == 'Festival of Lanterns ( Veldra )'
    for article in articles:
        assert article.lines[0].strip() == '' and title_of(article.lines[1]) == article.title


def test_title_like_line_inside_a_paragraph_does_not_split_an_article():
    orchard = [a for a in read_articles(lines_of(FIXTURE)) if a.title == 'The Quiet Orchard']
    assert len(orchard) == 1
    assert ' = the orchard = ' in orchard[0].lines
    assert "Critics praised the novel 's restraint ." in ' '.join(orchard[0].lines)


def test_tokens_close_every_line_with_eos():
    article = next(read_articles([' ', ' = T = ', ' ', ' a b ', ' ']))
    assert article.tokens() == [EOS, '=', 'T', '=', EOS, EOS, 'a', 'b', EOS, EOS]


def test_chunks_have_the_asked_length_but_the_last():
    assert chunks(list('abcdefg'), 3) == [['a', 'b', 'c'], ['d', 'e', 'f'], ['g']]
    assert chunks(list('abc'), 10) == [['a', 'b', 'c']]


@pytest.mark.parametrize('context', ['prev', 'none'])
def test_examples_rebuild_the_article_and_take_the_previous_chunk_as_context(context):
    article = list(read_articles(lines_of(FIXTURE)))[1]
    examples = list(article_examples(article, 7, context))
    labels = [ex['labels'][0] for ex in examples]
    assert ' '.join(labels).split(' ') == article.tokens()
    assert all(len(label.split(' ')) == 7 for label in labels[:-1])
    assert [ex['wikitext_chunk'] for ex in examples] == list(range(len(examples)))
    assert {ex['wikitext_title'] for ex in examples} == {'Marta Kellin'}
    assert examples[0]['text'] == NO_CONTEXT
    if context == 'prev':
        assert [ex['text'] for ex in examples[1:]] == labels[:-1]
    else:
        assert {ex['text'] for ex in examples} == {NO_CONTEXT}


def test_carving_is_eight_one_one_by_article_index():
    assert [carved_split(i) for i in range(20)] == (['train'] * 8 + ['valid', 'test']) * 2


@pytest.mark.parametrize('path', [
    pytest.param(WT103_VALID, marks=requires_shared(WT103_VALID)),
    pytest.param(WT2_VALID, marks=requires_shared(WT2_VALID)),
])
def test_real_valid_splits_have_60_articles_and_the_published_token_count(path):
    lines = lines_of(path)
    articles = list(read_articles(lines))
    assert len(articles) == 60
    assert articles[0].title == 'Homarus gammarus'
    assert [line for a in articles for line in a.lines] == lines
    # The published size of the validation split: words plus one <eos> per line.
    assert sum(len(a.tokens()) for a in articles) == 217_646
