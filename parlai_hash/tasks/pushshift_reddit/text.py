"""Cleaning a comment body and spotting garbled text.

Heuristics only (no model download): they must run on billions of comments
on a CPU and give the same answer everywhere.
"""

from __future__ import annotations

import html
import re

# UTF-8 bytes read as Latin-1/cp1252: a lead byte (Â..ô) followed by a
# continuation byte (U+0080..U+00BF, or the cp1252 glyphs of 0x80..0x9F).
_MOJIBAKE_HINT = re.compile(
    '[\u00c2-\u00f4][\u0080-\u00bf\u20ac\u201a-\u2122\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc]'
)
_WHITESPACE = re.compile(r'\s+')
_CONTROL = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]')
_URL = re.compile(r'(?i)\b(?:https?://|ftp://|www\.)')
_SYMBOL = re.compile(r'[^\w ]|_')  # neither a letter, a digit nor a space

MIN_ALNUM_FRACTION = 0.4  # letters and digits among the non-space characters
MAX_UNBROKEN_RUN = 60  # characters without a space, URLs aside
_LONG_RUN = re.compile(r'[^ ]{%d,}' % (MAX_UNBROKEN_RUN + 1))


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as Latin-1 or cp1252 (``donâ€™t``).

    Early pushshift months are full of it. Text that does not round-trip
    cleanly is returned unchanged.
    """
    if not _MOJIBAKE_HINT.search(text):
        return text
    for codec in ('latin-1', 'cp1252'):
        try:
            return text.encode(codec).decode('utf-8')
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
    return text


def clean_body(body: str, fix_mojibake: bool) -> str:
    """One line of plain text: HTML entities undone, whitespace collapsed.

    Reddit stores bodies HTML-escaped (``&gt;``); a dialogue turn must be a
    single line because ParlAI joins context turns with newlines.
    """
    text = html.unescape(body)
    if fix_mojibake:
        text = repair_mojibake(text)
    # Stray control characters (\x05 in a sentence) are debris, not content.
    text = _CONTROL.sub(' ', text)
    return _WHITESPACE.sub(' ', text).strip()


def has_url(text: str) -> bool:
    return _URL.search(text) is not None


def is_garbled(text: str) -> bool:
    """Undecodable bytes, mostly symbols, or a huge unbroken run of characters.

    ``text`` is a cleaned body: its only whitespace is single spaces. Regexes
    rather than a loop over characters: this runs on every comment.
    """
    if '\ufffd' in text:
        return True
    visible = len(text) - text.count(' ')
    symbols = len(_SYMBOL.findall(text))
    if visible >= 10 and visible - symbols < MIN_ALNUM_FRACTION * visible:
        return True
    return any(not has_url(run.group()) for run in _LONG_RUN.finditer(text))


def starts_with_non_ascii(text: str) -> bool:
    """The first character of a cleaned body is not ASCII (``“Quote``, ``Ça``, an emoji)."""
    return bool(text) and not text[0].isascii()
