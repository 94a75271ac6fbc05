"""Cut an article into language-modelling examples in ParlAI's seq2seq form.

Each example's label is one chunk of ``chunk_tokens`` dataset tokens (words and
``<eos>``; the last chunk of an article is shorter) and its text is the chunk
before it, or a lone ``<eos>`` when there is none. Chunks never cross an
article boundary. Chunk length is counted in dataset tokens, not dictionary
tokens, so the examples are the same whichever dictionary a model uses.
"""

from __future__ import annotations

from typing import Dict, Iterator, List

from parlai_hash.tasks.wikitext103.articles import EOS, Article

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


def article_examples(article: Article, chunk_tokens: int, context: str) -> Iterator[Dict]:
    """One ParlAI message per chunk of ``article`` (the teacher makes each its own episode)."""
    pieces = chunks(article.tokens(), chunk_tokens)
    for index, piece in enumerate(pieces):
        if context == CONTEXT_PREV and index > 0:
            text = ' '.join(pieces[index - 1])
        else:
            text = NO_CONTEXT
        yield {
            'text': text,
            'labels': [' '.join(piece)],
            'wikitext_title': article.title,
            'wikitext_chunk': index,
        }
