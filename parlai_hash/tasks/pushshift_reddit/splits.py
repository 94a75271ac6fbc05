"""Train/valid/test by a hash of the thread, so a thread never straddles splits.

The hash is SHA-1 of the thread's full name (``t3_17863``), not Python's
``hash()``, which changes from process to process: the same dumps must give
the same split on every machine and in every resumed build.
"""

from __future__ import annotations

import functools
import hashlib

from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit.records import to_base36

SPLITS = ('train', 'valid', 'test')


def check_fractions(valid_fraction: float, test_fraction: float) -> None:
    for option, value in (
        ('--reddit-valid-fraction', valid_fraction),
        ('--reddit-test-fraction', test_fraction),
    ):
        if not 0.0 <= value < 1.0:
            raise OptionError(option, f"got {value}", "use a fraction in [0, 1), e.g. 0.05")
    if valid_fraction + test_fraction >= 1.0:
        raise OptionError(
            '--reddit-valid-fraction',
            f"valid {valid_fraction} + test {test_fraction} leaves nothing to train on",
            "keep their sum below 1",
        )


@functools.lru_cache(maxsize=1 << 16)  # comments of a thread come close together
def thread_position(link_id: int) -> float:
    """A stable pseudo-random number in [0, 1) for the thread ``t3_<link_id>``."""
    digest = hashlib.sha1(f't3_{to_base36(link_id)}'.encode('ascii')).digest()
    return int.from_bytes(digest[:8], 'big') / 2**64


def split_of_thread(link_id: int, valid_fraction: float, test_fraction: float) -> int:
    """Index into ``SPLITS``: test first, then valid, the rest train."""
    position = thread_position(link_id)
    if position < test_fraction:
        return SPLITS.index('test')
    if position < test_fraction + valid_fraction:
        return SPLITS.index('valid')
    return SPLITS.index('train')
