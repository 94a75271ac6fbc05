"""Split an article into sentences, losing no token.

WikiText is already tokenised, so a sentence ends at a ``.``, ``?`` or ``!``
token (a decimal point is the separate token ``@.@`` and an abbreviation keeps
its dot, as in ``H.``), and always at a line end: each line is a paragraph,
closed by the ``<eos>`` of the dataset's word-level token count. Rules:

* A closing ``"`` or ``)`` right after the end mark stays with the sentence
  (``" Golden Age . "``): a ``"`` closes when the line so far holds an odd
  number of them, a ``)`` when it holds an open ``(`` (a quote may span
  sentences). A lowercase word right after the mark continues the sentence
  (``... Foula <unk> ! " refers to ...``: the mark ended a quoted title).
* A line's ``<eos>`` closes the sentence it ends; the ``<eos>`` of the blank
  lines after it joins that sentence too, so no sentence is a bare ``<eos>``.
  The blank line in front of an article's title has no sentence before it and
  opens the title's.
* A heading line (`` = Title = ``, `` = = Section = = ``) is one sentence
  whatever punctuation it holds, so headings are units of their own: a label
  (the model predicts them, and every token of the file is some label) and
  the context of the section's first sentence.
* A sentence longer than the cap is cut into the fewest pieces of at most that
  many tokens, of near-equal length (lists make "sentences" of 200 tokens
  and more; equal pieces avoid a tail of one token).
"""

from __future__ import annotations

from typing import List

from parlai_hash.tasks.wikitext103.articles import EOS, Article

#: Tokens that end a sentence (``@.@`` is a decimal point, not among them).
SENTENCE_ENDS = frozenset({'.', '?', '!'})


def is_heading(words: List[str]) -> bool:
    """A title or section line: ``= Title =``, ``= = Section = =`` and deeper."""
    return len(words) >= 3 and words[0] == words[-1] == '='


def split_line(words: List[str]) -> List[List[str]]:
    """The sentences of one non-blank line, without its ``<eos>``."""
    if is_heading(words):
        return [list(words)]
    sentences: List[List[str]] = []
    current: List[str] = []
    ended = False  # an end mark was seen; the next ordinary word starts a sentence
    quotes = brackets = 0  # open " and ( so far in the line (a quote may span sentences)
    for word in words:
        if ended:
            closing = (word == '"' and quotes % 2 == 1) or (word == ')' and brackets > 0)
            if word[:1].islower():
                ended = False  # '! " refers to': the mark was inside a title or quote
            elif word not in SENTENCE_ENDS and not closing:
                sentences.append(current)
                current, ended = [], False
        current.append(word)
        ended = ended or word in SENTENCE_ENDS
        quotes += word == '"'
        brackets += (word == '(') - (word == ')' and brackets > 0)
    if current:
        sentences.append(current)
    return sentences


def article_sentences(article: Article) -> List[List[str]]:
    """Sentences of ``article`` in order; concatenated they are ``article.tokens()``."""
    sentences: List[List[str]] = []
    opening: List[str] = []  # blank lines with no sentence before them yet
    for line in article.lines:
        words = line.split()
        if not words:
            (sentences[-1] if sentences else opening).append(EOS)
            continue
        pieces = split_line(words)
        pieces[0] = opening + pieces[0]
        pieces[-1].append(EOS)
        opening = []
        sentences.extend(pieces)
    if opening:  # an article of blank lines only
        sentences.append(opening)
    return sentences


def cap(sentence: List[str], max_tokens: int) -> List[List[str]]:
    """``sentence`` in the fewest pieces of at most ``max_tokens``, of near-equal length."""
    count = -(-len(sentence) // max_tokens)
    if count <= 1:
        return [sentence]
    size, extra = divmod(len(sentence), count)
    pieces, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        pieces.append(sentence[start:end])
        start = end
    return pieces


def capped_sentences(article: Article, max_tokens: int) -> List[List[str]]:
    """The article's sentences, each long one cut by :func:`cap`."""
    return [piece for s in article_sentences(article) for piece in cap(s, max_tokens)]
