"""Which comments (and submissions) are dropped, and why.

The rules, their defaults and their sources are in ``rules.py`` and
``tasks/pushshift_reddit.md``. A dropped comment also takes its whole subtree
out of the responses, as Recipes (Roller et al. 2020, section 6.1) removes a
comment together with all of its children: a reply to something the model
never sees is not a sensible dialogue turn. The depth rule needs the
whole thread, so it is applied when the threads are linked (``index.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, FrozenSet, Optional, Tuple

from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit.language import is_non_english
from parlai_hash.tasks.pushshift_reddit.records import Comment
from parlai_hash.tasks.pushshift_reddit.rules import (
    DEFAULT_RULES,
    MAX_CHARS_ANY,
    MAX_CHARS_RULES,
    RULE_SETS,
)
from parlai_hash.tasks.pushshift_reddit.text import (
    clean_body,
    has_url,
    is_garbled,
    starts_with_non_ascii,
)
from parlai_hash.tasks.pushshift_reddit.tokens import BpeFiles, TokenLimit, describe_tokenizer

DELETED_BODIES = frozenset({'[deleted]', '[removed]', '[deleted by user]'})

#: AutoModerator and the many ``...bot`` accounts (RemindMeBot, WikiTextBot, ...).
DEFAULT_BOT_AUTHOR_REGEX = r'(?i)^(automoderator|autotldr)$|bot$'

#: Filter names in the order they are tried (the tokenizer last: it is the
#: slowest); a dropped comment is counted under the first that matches.
FILTER_REASONS: Tuple[str, ...] = (
    'deleted',
    'subreddit_blocked',
    'bot_author',
    'url',
    'too_short',
    'too_long',
    'non_ascii_start',
    'garbled',
    'non_english',
    'too_many_tokens',
)

_DEFAULT = RULE_SETS[DEFAULT_RULES]


def parse_subreddit_list(text: Optional[str]) -> FrozenSet[str]:
    return frozenset(
        name.strip().lower().removeprefix('r/') for name in (text or '').split(',') if name.strip()
    )


@dataclass(frozen=True)
class FilterConfig:
    """The per-comment filters; the defaults are the ``recipes`` rule set."""

    drop_deleted: bool = True
    subreddit_blocklist: FrozenSet[str] = field(
        default_factory=lambda: parse_subreddit_list(_DEFAULT.subreddit_blocklist)
    )
    bot_author_regex: str = DEFAULT_BOT_AUTHOR_REGEX
    drop_urls: bool = True
    min_chars: int = 5
    max_chars: int = 2048
    max_chars_rule: str = _DEFAULT.max_chars_rule
    max_bpe_tokens: int = _DEFAULT.max_bpe_tokens
    #: None: count byte-level pre-tokens, a lower bound of any BPE's count.
    bpe_files: Optional[BpeFiles] = None
    drop_non_ascii_start: bool = _DEFAULT.drop_non_ascii_start
    drop_garbled: bool = _DEFAULT.drop_garbled
    drop_non_english: bool = _DEFAULT.drop_non_english
    fix_mojibake: bool = True

    @classmethod
    def of_rules(cls, name: str, **overrides: Any) -> 'FilterConfig':
        """The filters of the rule set ``name``, with ``overrides``."""
        rules = RULE_SETS[name]
        return replace(
            cls(),
            subreddit_blocklist=parse_subreddit_list(rules.subreddit_blocklist),
            max_chars_rule=rules.max_chars_rule,
            max_bpe_tokens=rules.max_bpe_tokens,
            drop_non_ascii_start=rules.drop_non_ascii_start,
            drop_garbled=rules.drop_garbled,
            drop_non_english=rules.drop_non_english,
            **overrides,
        )

    def __post_init__(self) -> None:
        if self.min_chars < 0:
            raise OptionError('--reddit-min-chars', f"got {self.min_chars}", "use 0 or more")
        if self.max_chars < self.min_chars:
            raise OptionError(
                '--reddit-max-chars',
                f"got {self.max_chars}, below --reddit-min-chars {self.min_chars}",
                "make it at least --reddit-min-chars",
            )
        if self.max_chars_rule not in MAX_CHARS_RULES:
            raise OptionError(
                '--reddit-max-chars-rule',
                f"got {self.max_chars_rule!r}",
                f"use one of {', '.join(MAX_CHARS_RULES)}",
            )
        if self.max_bpe_tokens < 0:
            raise OptionError(
                '--reddit-max-bpe-tokens', f"got {self.max_bpe_tokens}", "use 0 (no limit) or more"
            )
        try:
            re.compile(self.bot_author_regex)
        except re.error as error:
            raise OptionError(
                '--reddit-bot-author-regex',
                f"{self.bot_author_regex!r} is not a regular expression ({error})",
                "pass a Python regular expression, or '' to keep every author",
            ) from None

    def describe(self) -> Dict[str, object]:
        """JSON-able, order-independent form (for the build key and the manifest)."""
        return {
            'drop_deleted': self.drop_deleted,
            'subreddit_blocklist': sorted(self.subreddit_blocklist),
            'bot_author_regex': self.bot_author_regex,
            'drop_urls': self.drop_urls,
            'min_chars': self.min_chars,
            'max_chars': self.max_chars,
            'max_chars_rule': self.max_chars_rule,
            'max_bpe_tokens': self.max_bpe_tokens,
            # Which tokenizer counted matters only when something is counted.
            'bpe_tokenizer': describe_tokenizer(self.bpe_files) if self.max_bpe_tokens else None,
            'drop_non_ascii_start': self.drop_non_ascii_start,
            'drop_garbled': self.drop_garbled,
            'drop_non_english': self.drop_non_english,
            'fix_mojibake': self.fix_mojibake,
        }


class CommentFilter:
    """Cleans a comment's body (or a post's title) and names the first filter that drops it."""

    def __init__(self, config: FilterConfig):
        self.config = config
        self._bot = re.compile(config.bot_author_regex) if config.bot_author_regex else None
        self._tokens = TokenLimit(config.max_bpe_tokens, config.bpe_files)

    def apply(self, comment: Comment) -> Tuple[str, Optional[str]]:
        """(cleaned body, None) for a kept comment, (cleaned body, reason) otherwise."""
        return self.check(comment.body, comment.author, comment.subreddit)

    def check(self, body: str, author: str, subreddit: str) -> Tuple[str, Optional[str]]:
        """``apply`` for any text with its author and subreddit."""
        config = self.config
        text = clean_body(body, config.fix_mojibake)
        if config.drop_deleted and text in DELETED_BODIES:
            return text, 'deleted'
        if subreddit.lower() in config.subreddit_blocklist:
            return text, 'subreddit_blocked'
        if self._bot is not None and self._bot.search(author):
            return text, 'bot_author'
        if config.drop_urls and has_url(text):
            return text, 'url'
        if len(text) < config.min_chars:
            return text, 'too_short'
        # Cleaned text has only single spaces for whitespace: "no space" is "no whitespace".
        if len(text) > config.max_chars and (
            config.max_chars_rule == MAX_CHARS_ANY or ' ' not in text
        ):
            return text, 'too_long'
        if config.drop_non_ascii_start and starts_with_non_ascii(text):
            return text, 'non_ascii_start'
        if config.drop_garbled and is_garbled(text):
            return text, 'garbled'
        if config.drop_non_english and is_non_english(text):
            return text, 'non_english'
        if self._tokens.exceeded(text):
            return text, 'too_many_tokens'
        return text, None
