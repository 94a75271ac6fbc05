"""One dump line -> one comment, or None when the line is not a usable comment.

Reddit ids are base 36 (``c13``); the index stores them as integers, which
are smaller and faster to join on than strings. ``t1_`` prefixes a comment
id, ``t3_`` a submission (thread) id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

_BASE36 = '0123456789abcdefghijklmnopqrstuvwxyz'
#: Reddit ids are at most a dozen base-36 digits; a longer "id" is garbage
#: (and would not fit SQLite's 64-bit integers).
_MAX_ID_DIGITS = 12


@dataclass(frozen=True)
class Comment:
    id: int
    #: The comment replied to; None when the comment replies to the submission.
    parent_id: Optional[int]
    link_id: int
    body: str
    author: str
    subreddit: str


def parse_base36(text: str) -> Optional[int]:
    if not 0 < len(text) <= _MAX_ID_DIGITS or not text.isascii() or not text.isalnum():
        return None
    return int(text, 36)


def to_base36(number: int) -> str:
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
        if number == 0:
            return ''.join(reversed(digits))


def _fullname(value: object, prefix: str) -> Optional[int]:
    if not isinstance(value, str) or not value.startswith(prefix):
        return None
    return parse_base36(value[len(prefix) :])


def parse_comment(line: bytes) -> Optional[Comment]:
    """The comment on ``line``; None for bad JSON, bad UTF-8 or missing fields."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    raw_id = record.get('id')
    comment_id = parse_base36(raw_id) if isinstance(raw_id, str) else None
    link_id = _fullname(record.get('link_id'), 't3_')
    parent = record.get('parent_id')
    body = record.get('body')
    if comment_id is None or link_id is None or not isinstance(body, str):
        return None
    if parent == record.get('link_id'):
        parent_id = None
    else:
        parent_id = _fullname(parent, 't1_')
        if parent_id is None:
            return None
    author = record.get('author')
    subreddit = record.get('subreddit')
    return Comment(
        id=comment_id,
        parent_id=parent_id,
        link_id=link_id,
        body=body,
        author=author if isinstance(author, str) else '',
        subreddit=subreddit if isinstance(subreddit, str) else '',
    )
