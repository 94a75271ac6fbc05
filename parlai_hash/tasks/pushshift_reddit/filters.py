"""Which comments are dropped, and why.

The rules follow the pushshift.io pre-training data of Blender (Roller et al.,
2020, section 6.1): known bots, non-English subreddits, deleted/removed
comments, URLs, very short or very long comments. A dropped comment also
takes its whole subtree out of the responses: a reply to something the model
never sees is not a sensible dialogue turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional, Tuple

from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit.language import is_non_english
from parlai_hash.tasks.pushshift_reddit.records import Comment
from parlai_hash.tasks.pushshift_reddit.text import clean_body, has_url, is_garbled

DELETED_BODIES = frozenset({'[deleted]', '[removed]', '[deleted by user]'})

#: AutoModerator and the many ``...bot`` accounts (RemindMeBot, WikiTextBot, ...).
DEFAULT_BOT_AUTHOR_REGEX = r'(?i)^(automoderator|autotldr)$|bot$'

#: Large subreddits that write in another language, and nsfw. Comma separated,
#: compared case-insensitively.
DEFAULT_SUBREDDIT_BLOCKLIST = (
    'nsfw,de,france,quebec,brasil,portugal,argentina,mexico,chile,vzla,es,italy,'
    'polska,sweden,svenskpolitik,suomi,norge,denmark,thenetherlands,romania,ja'
)

#: Filter names in the order they are tried; a dropped comment is counted
#: under the first that matches.
FILTER_REASONS: Tuple[str, ...] = (
    'deleted',
    'subreddit_blocked',
    'bot_author',
    'url',
    'too_short',
    'too_long',
    'garbled',
    'non_english',
)


def parse_subreddit_list(text: Optional[str]) -> FrozenSet[str]:
    return frozenset(
        name.strip().lower().removeprefix('r/') for name in (text or '').split(',') if name.strip()
    )


@dataclass(frozen=True)
class FilterConfig:
    drop_deleted: bool = True
    subreddit_blocklist: FrozenSet[str] = field(
        default_factory=lambda: parse_subreddit_list(DEFAULT_SUBREDDIT_BLOCKLIST)
    )
    bot_author_regex: str = DEFAULT_BOT_AUTHOR_REGEX
    drop_urls: bool = True
    min_chars: int = 5
    max_chars: int = 2048
    drop_garbled: bool = True
    drop_non_english: bool = True
    fix_mojibake: bool = True

    def __post_init__(self) -> None:
        if self.min_chars < 0:
            raise OptionError('--reddit-min-chars', f"got {self.min_chars}", "use 0 or more")
        if self.max_chars < self.min_chars:
            raise OptionError(
                '--reddit-max-chars',
                f"got {self.max_chars}, below --reddit-min-chars {self.min_chars}",
                "make it at least --reddit-min-chars",
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
            'drop_garbled': self.drop_garbled,
            'drop_non_english': self.drop_non_english,
            'fix_mojibake': self.fix_mojibake,
        }


class CommentFilter:
    """Cleans a comment's body and names the first filter that drops it."""

    def __init__(self, config: FilterConfig):
        self.config = config
        self._bot = re.compile(config.bot_author_regex) if config.bot_author_regex else None

    def apply(self, comment: Comment) -> Tuple[str, Optional[str]]:
        """(cleaned body, None) for a kept comment, (cleaned body, reason) otherwise."""
        config = self.config
        text = clean_body(comment.body, config.fix_mojibake)
        if config.drop_deleted and text in DELETED_BODIES:
            return text, 'deleted'
        if comment.subreddit.lower() in config.subreddit_blocklist:
            return text, 'subreddit_blocked'
        if self._bot is not None and self._bot.search(comment.author):
            return text, 'bot_author'
        if config.drop_urls and has_url(text):
            return text, 'url'
        if len(text) < config.min_chars:
            return text, 'too_short'
        if len(text) > config.max_chars:
            return text, 'too_long'
        if config.drop_garbled and is_garbled(text):
            return text, 'garbled'
        if config.drop_non_english and is_non_english(text):
            return text, 'non_english'
        return text, None
