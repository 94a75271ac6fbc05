"""Is a comment English? A cheap, deterministic guess from letters and words.

Three signals, any one of which marks a text as not English:

* most of its letters are not ASCII (Cyrillic, CJK, Polish, ...);
* it has more function words of another common Reddit language than of
  English (at least two), which catches ASCII-written Spanish, Indonesian, ...;
* it is long enough for the test to mean something and has almost no English
  function words (real English prose has 30-50% of them).
"""

from __future__ import annotations

import re

_LETTER = re.compile(r'[^\W\d_]')
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")

ENGLISH_FUNCTION_WORDS = frozenset(
    """a about after all also an and any are as at be because been but by can
    could did didn't do does doesn't don't for from had has have he her him his
    how i i'm if in into is isn't it it's its just like me more my no not now of
    on one only or our out so some than that that's the their them then there
    these they this to too up us very was we were what when which who why will
    with would you your""".split()
)

#: Frequent words of the other big Reddit languages, minus any that are also
#: English words (``die``, ``son``, ``come``, ``man``, ...).
OTHER_FUNCTION_WORDS = (
    frozenset(
        # Spanish
        """el la los las del que por con una para como pero sus muy sin sobre
    también hasta hay donde desde todo esta este es y porque más"""
        # Portuguese
        """ não uma com os mais mas foi ao ele das tem seu sua ou ser quando muito
    já está eu isso ela depois sem mesmo você"""
        # French
        """ le les des est une du et dans qui pas pour sur avec ce il sont nous
    vous ils elle cette leur été être fait aussi je"""
        # German
        """ der und den das nicht ist ich sie mit dem auf ein eine für sich auch
    wird zu von wie oder aber bei noch nach wir sind werden nur kann"""
        # Italian
        """ di che è non sono della gli alla si anche questo più ma nel ha"""
        # Dutch
        """ het een van niet zijn dat ik je voor op met maar om ook als bij er nog
    wat dan wordt naar deze"""
        # Indonesian / Malay
        """ yang dan di ini itu dengan untuk tidak dari dalam akan pada juga ke
    karena tersebut bisa ada mereka lebih kami sudah saya kita seperti bagi
    hanya oleh atau tentang""".split()
    )
    - ENGLISH_FUNCTION_WORDS
)

MIN_ASCII_LETTER_FRACTION = 0.9
MIN_OTHER_LANGUAGE_HITS = 2
#: Below this many words the English-share test says nothing reliable.
MIN_WORDS_FOR_ENGLISH_SHARE = 12
MIN_ENGLISH_FUNCTION_WORD_FRACTION = 0.05


def is_non_english(text: str) -> bool:
    """True when ``text`` is most likely not written in English."""
    if not text.isascii():  # the cheap common case skips the letter count
        letters = _LETTER.findall(text)
        ascii_letters = sum(letter.isascii() for letter in letters)
        if ascii_letters < MIN_ASCII_LETTER_FRACTION * len(letters):
            return True
    words = _WORD.findall(text.lower())
    english = sum(word in ENGLISH_FUNCTION_WORDS for word in words)
    other = sum(word in OTHER_FUNCTION_WORDS for word in words)
    if other >= MIN_OTHER_LANGUAGE_HITS and other > english:
        return True
    long_enough = len(words) >= MIN_WORDS_FOR_ENGLISH_SHARE
    return long_enough and english < MIN_ENGLISH_FUNCTION_WORD_FRACTION * len(words)
