"""Cut an article into language-modelling examples in ParlAI's seq2seq form.

An article is cut into units, each the label of one example: sentences
(``sentences.py``; long ones capped) or fixed chunks of ``chunk_tokens``
dataset tokens (the last chunk of an article is shorter). The text of an
example is the unit before it (``prev``), or as many whole units before it as
fit in ``context_tokens`` (the one before it always), or a lone ``<eos>`` when
there is none. Units and contexts never cross an article boundary. Lengths
count dataset tokens (words and ``<eos>``), not dictionary tokens, so the
examples are the same whichever dictionary a model uses.
"""

from __future__ import annotations

from typing import Dict, Iterator, List

from parlai_hash.tasks.wikitext103.articles import EOS, Article
from parlai_hash.tasks.wikitext103.sentences import capped_sentences

#: Context modes (``--wikitext-context``).
CONTEXT_PREV = 'prev'
CONTEXT_NONE = 'none'
CONTEXT_MODES = (CONTEXT_PREV, CONTEXT_NONE)

#: Text of an example with nothing before it. ParlAI skips examples whose text
#: is empty, so it cannot be ''; every article in the file follows a line end.
NO_CONTEXT = EOS


def chunks(tokens: List[str], chunk_tokens: int) -> List[List[str]]:
    """``tokens`` in consecutive pieces of ``chunk_tokens`` (the last may be shorter)."""
    return [tokens[i : i + chunk_tokens] for i in range(0, len(tokens), chunk_tokens)]


def context_of(units: List[List[str]], index: int, context_tokens: int) -> List[str]:
    """The units before ``units[index]``: the previous one, then older ones while
    the total stays within ``context_tokens``; whole units only."""
    if index == 0:
        return []
    start = index - 1
    used = len(units[start])
    while start > 0 and used + len(units[start - 1]) <= context_tokens:
        start -= 1
        used += len(units[start])
    return [token for unit in units[start:index] for token in unit]


def unit_examples(
    article: Article, units: List[List[str]], context: str, context_tokens: int, index_key: str
) -> Iterator[Dict]:
    """One ParlAI message per unit of ``article`` (the teacher makes each its own episode)."""
    for index, unit in enumerate(units):
        previous = context_of(units, index, context_tokens) if context == CONTEXT_PREV else []
        yield {
            'text': ' '.join(previous) if previous else NO_CONTEXT,
            'labels': [' '.join(unit)],
            'wikitext_title': article.title,
            index_key: index,
        }


def article_examples(
    article: Article, chunk_tokens: int, context: str, context_tokens: int = 0
) -> Iterator[Dict]:
    """Chunk examples: labels of ``chunk_tokens`` tokens, indexed by ``wikitext_chunk``."""
    units = chunks(article.tokens(), chunk_tokens)
    return unit_examples(article, units, context, context_tokens, 'wikitext_chunk')


def sentence_examples(
    article: Article, sentence_tokens: int, context: str, context_tokens: int = 0
) -> Iterator[Dict]:
    """Sentence examples: one sentence (or piece of a long one) per label, indexed by
    ``wikitext_sentence``."""
    units = capped_sentences(article, sentence_tokens)
    return unit_examples(article, units, context, context_tokens, 'wikitext_sentence')
