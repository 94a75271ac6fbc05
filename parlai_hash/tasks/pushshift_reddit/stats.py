"""The build's counters and their table.

Every line read lands in exactly one of: corrupt, duplicate, one ``dropped_*``
filter, or kept. Every kept comment is exactly one of: a thread starter (a
reply to the submission, whose title the comment dumps lack, so it is only
ever context), a reply whose parent is not in the dumps, a reply below a
dropped comment, or a response, i.e. an example in one of the splits.
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
    *(f'examples_{s}' for s in SPLITS),
)

_LABELS = {
    'read': 'comment lines read',
    'corrupt': 'corrupt lines (skipped)',
    'duplicate': 'duplicate comments (skipped)',
    **{f'dropped_{r}': f'dropped: {r.replace("_", " ")}' for r in FILTER_REASONS},
    'kept': 'kept comments',
    'kept_top_level': '  kept, top level (context only)',
    'kept_parent_missing': '  kept, parent not in the dumps',
    'kept_ancestor_dropped': '  kept, an ancestor was dropped',
    **{f'examples_{s}': f'  examples: {s}' for s in SPLITS},
}


def empty_line_counters() -> Dict[str, int]:
    return dict.fromkeys(LINE_COUNTERS, 0)


def stats_table(stats: Mapping[str, int]) -> str:
    """The counters as a text table, with each count's share of the lines read."""
    import pandas as pd

    read = max(stats.get('read', 0), 1)
    rows = [
        (_LABELS[key], stats.get(key, 0), f'{100.0 * stats.get(key, 0) / read:.1f}%')
        for key in (*LINE_COUNTERS, *KEPT_COUNTERS)
    ]
    frame = pd.DataFrame(rows, columns=['', 'count', 'of read'])
    width = max(len(label) for label, _, _ in rows)
    return frame.to_string(index=False, formatters={'': lambda s: s.ljust(width)})
