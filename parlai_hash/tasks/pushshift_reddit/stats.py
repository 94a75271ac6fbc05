"""The build's counters and their table.

Every comment line read lands in exactly one of: corrupt, duplicate, one
``dropped_*`` filter, or kept. Every kept comment is exactly one of: a reply
to a post whose title the dumps lack (only ever context), a reply whose
parent is not in the dumps, a reply below a dropped comment or in the thread
of a dropped post, a comment deeper than the depth limit, or a response,
i.e. an example in one of the splits. Submission lines (``RS_`` files) are
counted on their own: corrupt, duplicate, dropped (and their threads with
them) or kept.
"""

from __future__ import annotations

from typing import Dict, Mapping

from parlai_hash.tasks.pushshift_reddit.filters import FILTER_REASONS
from parlai_hash.tasks.pushshift_reddit.splits import SPLITS

LINE_COUNTERS = ('read', 'corrupt', 'duplicate', *(f'dropped_{r}' for r in FILTER_REASONS), 'kept')
KEPT_COUNTERS = (
    'kept_top_level',
    'kept_parent_missing',
    'kept_ancestor_dropped',
    'kept_too_deep',
    *(f'examples_{s}' for s in SPLITS),
)
SUBMISSION_STATS_PREFIX = 'submissions_'
SUBMISSION_COUNTERS = ('read', 'corrupt', 'duplicate', 'dropped', 'kept')

_LABELS = {
    'read': 'comment lines read',
    'corrupt': 'corrupt lines (skipped)',
    'duplicate': 'duplicate comments (skipped)',
    **{f'dropped_{r}': f'dropped: {r.replace("_", " ")}' for r in FILTER_REASONS},
    'kept': 'kept comments',
    'kept_top_level': '  kept, reply to a post not in the dumps (context only)',
    'kept_parent_missing': '  kept, parent not in the dumps',
    'kept_ancestor_dropped': '  kept, an ancestor was dropped',
    'kept_too_deep': '  kept, deeper than --reddit-max-depth',
    **{f'examples_{s}': f'  examples: {s}' for s in SPLITS},
}
_SUBMISSION_LABELS = {
    'read': 'submission lines read',
    'corrupt': 'corrupt lines (skipped)',
    'duplicate': 'duplicate submissions (skipped)',
    'dropped': 'dropped, with their threads',
    'kept': 'kept (titles as context)',
}


def empty_line_counters() -> Dict[str, int]:
    return dict.fromkeys(LINE_COUNTERS, 0)


def empty_submission_counters() -> Dict[str, int]:
    return dict.fromkeys(SUBMISSION_COUNTERS, 0)


def stats_table(stats: Mapping[str, int]) -> str:
    """The counters as a text table, with each count's share of its lines read."""
    import pandas as pd

    def rows(labels: Mapping[str, str], prefix: str):
        read = max(stats.get(f'{prefix}read', 0), 1)
        for key, label in labels.items():
            count = stats.get(f'{prefix}{key}', 0)
            yield label, count, f'{100.0 * count / read:.1f}%'

    table = list(rows({key: _LABELS[key] for key in (*LINE_COUNTERS, *KEPT_COUNTERS)}, ''))
    if stats.get(f'{SUBMISSION_STATS_PREFIX}read'):
        table += list(rows(_SUBMISSION_LABELS, SUBMISSION_STATS_PREFIX))
    frame = pd.DataFrame(table, columns=['', 'count', 'of read'])
    width = max(len(label) for label, _, _ in table)
    return frame.to_string(index=False, formatters={'': lambda s: s.ljust(width)})
