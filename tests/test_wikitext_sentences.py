"""Sentence units of WikiText: splitting, the cap, contexts, the real file (no ParlAI)."""

import statistics
from pathlib import Path

import pytest

from conftest import SHARED_DATA, requires_shared
from parlai_hash.tasks.wikitext103.articles import EOS, read_articles
from parlai_hash.tasks.wikitext103.examples import NO_CONTEXT, context_of, sentence_examples
from parlai_hash.tasks.wikitext103.sentences import (
    article_sentences,
    cap,
    is_heading,
    split_line,
)

FIXTURE = Path(__file__).parent / 'fixtures' / 'wikitext' / 'wiki.valid.tokens'
WT103_VALID = SHARED_DATA / 'wikitext-103' / 'wiki.valid.tokens'


def lines_of(path):
    with open(path, encoding='utf-8') as f:
        return f.read().splitlines()


def split(text):
    return [' '.join(s) for s in split_line(text.split())]


def test_sentences_end_at_full_stops_question_and_exclamation_marks_not_decimal_points():
    assert split('It is 14 @.@ 5 km long . Is it ? Yes ! Done') == [
        'It is 14 @.@ 5 km long .', 'Is it ?', 'Yes !', 'Done']
    assert split('Its closest relative is H. gammarus , 1 @,@ 200 m deep .') == [
        'Its closest relative is H. gammarus , 1 @,@ 200 m deep .']
    assert split('What ? ! Next .') == ['What ? !', 'Next .']


def test_closing_quotes_and_brackets_stay_with_their_sentence():
    assert split('He said " go away . " Then he left .') == ['He said " go away . "', 'Then he left .']
    # A quote spanning two sentences closes after the second.
    assert split('" One . Two . " Three .') == ['" One .', 'Two . "', 'Three .']
    # An opening quote starts the next sentence.
    assert split('It ended . " Angel " is a song .') == ['It ended .', '" Angel " is a song .']
    assert split('( See below . ) Next .') == ['( See below . )', 'Next .']


def test_a_lowercase_word_after_the_mark_continues_the_sentence():
    assert split('" Foula <unk> ! " refers to rowing . The end') == [
        '" Foula <unk> ! " refers to rowing .', 'The end']


def test_headings_are_one_unit_whatever_they_hold():
    assert is_heading(['=', 'Homarus', 'gammarus', '=']) and is_heading('= = = Deep = = ='.split())
    assert not is_heading(['It', 'is', '='])
    heading = '= = Who Framed Roger Rabbit ? Or not . = ='
    assert split(heading) == [heading]


def test_line_ends_and_blank_lines_close_sentences_and_join_the_one_before():
    lines = [' ', ' = T = ', ' ', ' A b . C d ', ' E . ', ' ', ' ', ' = = S = = ', ' ', ' F . ']
    article = next(read_articles(lines))
    assert [' '.join(s) for s in article_sentences(article)] == [
        '<eos> = T = <eos> <eos>',  # the blank line before the title opens it
        'A b .', 'C d <eos>',  # a line end closes a sentence without a mark
        'E . <eos> <eos> <eos>',
        '= = S = = <eos> <eos>',
        'F . <eos>',
    ]


def test_a_long_sentence_is_cut_into_the_fewest_near_equal_pieces():
    assert [len(p) for p in cap(list(range(65)), 64)] == [33, 32]  # no one-token tail
    assert [len(p) for p in cap(list(range(10)), 4)] == [4, 3, 3]
    assert cap(list(range(4)), 4) == [list(range(4))]
    pieces = cap(list(range(100)), 7)
    assert [x for p in pieces for x in p] == list(range(100)) and max(map(len, pieces)) <= 7
    assert len(pieces) == 15


def test_context_is_the_previous_unit_then_older_ones_within_the_budget():
    units = [['a'], ['b', 'b'], ['c', 'c', 'c'], ['d']]
    assert context_of(units, 0, 100) == []
    assert context_of(units, 3, 0) == ['c', 'c', 'c']
    assert context_of(units, 3, 2) == ['c', 'c', 'c']  # the previous one always, whole
    assert context_of(units, 3, 5) == ['b', 'b', 'c', 'c', 'c']
    assert context_of(units, 3, 6) == ['a', 'b', 'b', 'c', 'c', 'c']


def test_sentence_examples_of_a_fixture_article():
    article = list(read_articles(lines_of(FIXTURE)))[0]
    examples = list(sentence_examples(article, 64, 'prev'))
    labels = [ex['labels'][0] for ex in examples]
    assert labels == [
        '<eos> = Lake Vostrava = <eos> <eos>',
        'Lake Vostrava is a freshwater lake in the <unk> highlands , about 1 @,@ 200 metres above sea '
        'level . <eos>',
        'It is fed by three glacial streams and drains into the Ostra River . <eos> <eos>',
        '= = Geography = = <eos> <eos>',
        'The lake is 14 @.@ 5 km long and reaches a depth of 86 m near its northern shore . <eos> <eos>',
    ]
    assert [ex['text'] for ex in examples] == [NO_CONTEXT, *labels[:-1]]
    assert [ex['wikitext_sentence'] for ex in examples] == list(range(5))
    assert {ex['wikitext_title'] for ex in examples} == {'Lake Vostrava'}
    assert {ex['text'] for ex in sentence_examples(article, 64, 'none')} == {NO_CONTEXT}
    wider = [ex['text'] for ex in sentence_examples(article, 64, 'prev', context_tokens=25)]
    assert [len(label.split(' ')) for label in labels] == [7, 21, 16, 7, 22]
    assert wider[2] == labels[1]  # 21 + 7 > 25: the previous one only
    assert wider[4] == ' '.join(labels[2:4])  # 7 + 16 fit, 21 more would not


@pytest.mark.parametrize('max_tokens', [64, 5])
def test_fixture_labels_give_back_every_token(max_tokens):
    for article in read_articles(lines_of(FIXTURE)):
        labels = [ex['labels'][0] for ex in sentence_examples(article, max_tokens, 'prev')]
        assert ' '.join(labels).split(' ') == article.tokens()
        assert all(len(label.split(' ')) <= max_tokens for label in labels)


@requires_shared(WT103_VALID)
def test_real_valid_split_sentences_rebuild_the_file_and_their_statistics():
    articles = list(read_articles(lines_of(WT103_VALID)))
    sentences = [s for a in articles for s in article_sentences(a)]
    assert [t for s in sentences for t in s] == [t for a in articles for t in a.tokens()]
    lengths = sorted(map(len, sentences))
    # The numbers tasks/wikitext103.md quotes (tokens include <eos>).
    assert len(lengths) == 8637 and sum(lengths) == 217_646
    assert statistics.median(lengths) == 23 and lengths[int(0.99 * len(lengths))] == 66
    assert lengths[-1] == 201
    labels = [
        ex['labels'][0] for a in articles for ex in sentence_examples(a, 64, 'prev')
    ]
    assert len(labels) == 8748 and max(len(l.split(' ')) for l in labels) == 64
    assert ' '.join(labels).split(' ') == [t for a in articles for t in a.tokens()]
    assert sum(label.split(' ').count(EOS) for label in labels) == 3760  # one per line
