"""One dump line -> one comment (or submission), or None when the line is not usable.

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


@dataclass(frozen=True)
class Submission:
    """A post (``RS_`` dumps): the root of the thread ``t3_<id>``."""

    id: int
    title: str
    author: str
    subreddit: str


def _record(line: bytes) -> Optional[dict]:
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ''


def parse_submission(line: bytes) -> Optional[Submission]:
    """The submission on ``line``; None for bad JSON, bad UTF-8 or missing fields."""
    record = _record(line)
    if record is None:
        return None
    raw_id, title = record.get('id'), record.get('title')
    submission_id = parse_base36(raw_id) if isinstance(raw_id, str) else None
    if submission_id is None or not isinstance(title, str):
        return None
    return Submission(
        id=submission_id,
        title=title,
        author=_text(record.get('author')),
        subreddit=_text(record.get('subreddit')),
    )


def parse_comment(line: bytes) -> Optional[Comment]:
    """The comment on ``line``; None for bad JSON, bad UTF-8 or missing fields."""
    record = _record(line)
    if record is None:
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
    return Comment(
        id=comment_id,
        parent_id=parent_id,
        link_id=link_id,
        body=body,
        author=_text(record.get('author')),
        subreddit=_text(record.get('subreddit')),
    )
