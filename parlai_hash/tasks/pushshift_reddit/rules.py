"""The two rule sets that give the build options their defaults (``--reddit-rules``).

* ``recipes`` (the default): the pushshift.io Reddit pre-processing of Roller
  et al. 2020, "Recipes for building an open-domain chatbot", section 6.1,
  which the Hash Layers paper (section 5.1) builds on. Each rule and its
  source are listed in ``tasks/pushshift_reddit.md``.
* ``ours``: this task's earlier rules: any comment over 2,048 characters, a
  language guess and a garbled-text check instead of the first-character
  rule, nsfw blocked, no depth limit, seven turns of context, 5% of threads
  each for valid and test.

An option given on the command line overrides its rule set's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from parlai_hash.errors import OptionError

#: Large subreddits that write in another language. Comma separated,
#: compared case-insensitively.
NON_ENGLISH_SUBREDDITS = (
    'de,france,quebec,brasil,portugal,argentina,mexico,chile,vzla,es,italy,'
    'polska,sweden,svenskpolitik,suomi,norge,denmark,thenetherlands,romania,ja'
)

#: The values of ``--reddit-max-chars-rule``.
MAX_CHARS_WITHOUT_SPACES = 'without-spaces'
MAX_CHARS_ANY = 'any'
MAX_CHARS_RULES = (MAX_CHARS_WITHOUT_SPACES, MAX_CHARS_ANY)


@dataclass(frozen=True)
class RuleSet:
    """The defaults that differ between the rule sets (0 means "no limit")."""

    subreddit_blocklist: str
    max_chars_rule: str
    max_bpe_tokens: int
    drop_non_ascii_start: bool
    drop_garbled: bool
    drop_non_english: bool
    max_depth: int
    max_context_turns: int
    valid_fraction: float
    test_fraction: float


#: Recipes divides the threads into 4096 chunks and keeps one each for valid and test.
RECIPES_SPLIT_FRACTION = 1 / 4096

RULE_SETS: Dict[str, RuleSet] = {
    'recipes': RuleSet(
        subreddit_blocklist=NON_ENGLISH_SUBREDDITS,
        max_chars_rule=MAX_CHARS_WITHOUT_SPACES,
        max_bpe_tokens=128,
        drop_non_ascii_start=True,
        drop_garbled=False,
        drop_non_english=False,
        max_depth=7,
        max_context_turns=0,  # the full thread, which depth 7 already bounds
        valid_fraction=RECIPES_SPLIT_FRACTION,
        test_fraction=RECIPES_SPLIT_FRACTION,
    ),
    'ours': RuleSet(
        subreddit_blocklist='nsfw,' + NON_ENGLISH_SUBREDDITS,
        max_chars_rule=MAX_CHARS_ANY,
        max_bpe_tokens=0,
        drop_non_ascii_start=False,
        drop_garbled=True,
        drop_non_english=True,
        max_depth=0,
        max_context_turns=7,
        valid_fraction=0.05,
        test_fraction=0.05,
    ),
}
DEFAULT_RULES = 'recipes'


def rule_set(name: str) -> RuleSet:
    """The rule set called ``name``, or an OptionError listing the others."""
    try:
        return RULE_SETS[name]
    except KeyError:
        raise OptionError(
            '--reddit-rules', f'got {name!r}', f"use one of {', '.join(RULE_SETS)}"
        ) from None
