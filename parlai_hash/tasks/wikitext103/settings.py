"""How the teacher cuts articles into examples, from its options, checked.

``--wikitext-unit`` picks sentences (the paper's Table 4 reading: "splitting by
sentence") or fixed chunks (this task's first protocol). Left unset it is
``sentence``, except that a command giving ``--wikitext-chunk-tokens`` (as
every chunk command written before sentences existed does) keeps ``chunk``,
so such commands give exactly the examples they always gave. Each length
option belongs to one unit; giving it for the other unit is an error rather
than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional

from parlai_hash.errors import OptionError
from parlai_hash.tasks.wikitext103.articles import Article
from parlai_hash.tasks.wikitext103.examples import (
    CONTEXT_NONE,
    CONTEXT_PREV,
    article_examples,
    sentence_examples,
)

UNIT_SENTENCE = 'sentence'
UNIT_CHUNK = 'chunk'
UNITS = (UNIT_SENTENCE, UNIT_CHUNK)

DEFAULT_CHUNK_TOKENS = 256
#: Cap on a sentence label. 99% of WikiText-103 validation sentences are at
#: most 66 tokens; 64 keeps a label and its one-sentence context within the
#: paper's 128-token truncation with the word-level or the ~8k BPE dictionary.
DEFAULT_SENTENCE_TOKENS = 64


@dataclass(frozen=True)
class ExampleSettings:
    unit: str
    max_tokens: int  # chunk length, or the cap on a sentence
    context: str
    context_tokens: int

    def examples(self, article: Article) -> Iterator[Dict]:
        make = sentence_examples if self.unit == UNIT_SENTENCE else article_examples
        return make(article, self.max_tokens, self.context, self.context_tokens)

    def describe(self) -> str:
        if self.unit == UNIT_SENTENCE:
            what = f'sentences (cut above {self.max_tokens} tokens)'
        else:
            what = f'chunks of {self.max_tokens} tokens'
        if self.context == CONTEXT_NONE:
            return f'{what}, no context'
        older = f', older ones within {self.context_tokens} tokens' if self.context_tokens else ''
        return f'{what}, context: the previous {self.unit}{older}'


def _positive(option: str, value: int, example: int) -> int:
    if value < 1:
        raise OptionError(option, f'got {value}, need at least 1 token per example',
                          f'pass a positive length such as {example}')
    return value


def example_settings(opt: Mapping) -> ExampleSettings:
    """The teacher's settings from ``opt``; a one-line OptionError for a bad combination."""
    chunk: Optional[int] = opt.get('wikitext_chunk_tokens')
    sentence: Optional[int] = opt.get('wikitext_sentence_tokens')
    context = opt.get('wikitext_context') or CONTEXT_PREV
    context_tokens = opt.get('wikitext_context_tokens') or 0
    unit = opt.get('wikitext_unit') or (UNIT_CHUNK if chunk is not None else UNIT_SENTENCE)
    if unit not in UNITS:
        raise OptionError('--wikitext-unit', f'got {unit!r}', f'pass one of: {", ".join(UNITS)}')
    if unit == UNIT_SENTENCE and chunk is not None:
        raise OptionError(
            '--wikitext-chunk-tokens', 'sets a chunk length, but --wikitext-unit is sentence',
            'drop it (--wikitext-sentence-tokens caps sentences), or pass --wikitext-unit chunk',
        )
    if unit == UNIT_CHUNK and sentence is not None:
        raise OptionError(
            '--wikitext-sentence-tokens', 'caps sentences, but the unit is chunk',
            'drop it, or pass --wikitext-unit sentence without --wikitext-chunk-tokens',
        )
    if context_tokens < 0:
        raise OptionError('--wikitext-context-tokens', f'got {context_tokens}',
                          'pass 0 (the previous unit only) or more')
    if context_tokens and context == CONTEXT_NONE:
        raise OptionError('--wikitext-context-tokens', 'sizes a context, but --wikitext-context is none',
                          'drop it, or pass --wikitext-context prev')
    if unit == UNIT_SENTENCE:
        length = _positive('--wikitext-sentence-tokens',
                           DEFAULT_SENTENCE_TOKENS if sentence is None else sentence,
                           DEFAULT_SENTENCE_TOKENS)
    else:
        length = _positive('--wikitext-chunk-tokens',
                           DEFAULT_CHUNK_TOKENS if chunk is None else chunk, DEFAULT_CHUNK_TOKENS)
    return ExampleSettings(unit, length, context, context_tokens)
