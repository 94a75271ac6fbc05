"""The on-disk comment index (SQLite) that joins replies to their parents.

A reply and its parent may be in different monthly files, and a month does
not fit in memory, so every comment goes into one table keyed by its id, and
every submission (the post a thread hangs from) into another. Dropped
comments are kept as rows without a body: their replies must know that the
parent existed but was filtered (and so drop out too), as opposed to a
parent missing from the dumps. The same holds for a dropped submission and
its whole thread.

Depth counts the comments on the chain from the submission: a reply to the
submission is at depth 1, a reply to that reply at depth 2, and so on.

The same database records how far the build got (lines of each dump, levels
of thread resolution, shards written), each step committed together with
its data: an interrupted build resumes from its last commit.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY,  -- base-36 comment id as an integer
    parent INTEGER,          -- comment replied to; NULL for a reply to the submission
    link INTEGER NOT NULL,   -- the thread (submission) id
    split INTEGER NOT NULL,  -- index into splits.SPLITS
    body TEXT,               -- cleaned text; NULL when a filter dropped the comment
    depth INTEGER            -- 1 for a reply to the submission; NULL when not reachable
);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY,  -- the thread id, as in comments.link
    body TEXT                -- cleaned title; NULL when a filter dropped the submission
);
CREATE TABLE IF NOT EXISTS dump_progress (
    name TEXT PRIMARY KEY, lines_done INTEGER NOT NULL, done INTEGER NOT NULL,
    counts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (
    split TEXT NOT NULL, idx INTEGER NOT NULL, file TEXT NOT NULL,
    last_id INTEGER NOT NULL, examples INTEGER NOT NULL, PRIMARY KEY (split, idx)
);
"""

#: (id, parent, link, split, body or None)
CommentRow = Tuple[int, Optional[int], int, int, Optional[str]]
#: (id, title or None)
SubmissionRow = Tuple[int, Optional[str]]

#: SQL: the thread of comment ``c`` has a kept submission (its title is a context turn).
_TITLED = 'EXISTS (SELECT 1 FROM submissions s WHERE s.id = c.link AND s.body IS NOT NULL)'
#: SQL: the thread of comment ``c`` has a dropped submission (the thread is dropped).
_THREAD_DROPPED = 'EXISTS (SELECT 1 FROM submissions s WHERE s.id = c.link AND s.body IS NULL)'
#: SQL: reached comment ``c`` is a response: within the depth limit, with a
#: context (a parent comment, or the title).
_RESPONSE = f'c.depth >= 1 AND c.depth <= ? AND (c.depth >= 2 OR {_TITLED})'
#: Stands for "no depth limit" in the SQL above.
_NO_DEPTH_LIMIT = 2**62


def _depth_limit(max_depth: int) -> int:
    return max_depth or _NO_DEPTH_LIMIT


class FingerprintMismatch(Exception):
    """The index belongs to a build of other dumps or other options."""


class CommentIndex:
    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level='DEFERRED')
        # Durable enough: a crash loses at most the last commit, never consistency.
        self.db.execute('PRAGMA synchronous = NORMAL')
        self.db.executescript(_SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    # -- bookkeeping -----------------------------------------------------------

    def _get_meta(self, key: str) -> Optional[str]:
        row = self.db.execute('SELECT value FROM meta WHERE key = ?', (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute('INSERT OR REPLACE INTO meta VALUES (?, ?)', (key, value))

    def claim(self, fingerprint: Dict[str, object]) -> bool:
        """Tie the index to one build; True when it resumes an earlier attempt."""
        wanted = json.dumps(fingerprint, sort_keys=True)
        stored = self._get_meta('fingerprint')
        if stored is None:
            self._set_meta('fingerprint', wanted)
            self.db.commit()
            return False
        if stored != wanted:
            raise FingerprintMismatch(stored)
        return True

    def dump_progress(self, name: str) -> Tuple[int, bool, Dict[str, int]]:
        """(lines already ingested, whole file done, counters so far)."""
        row = self.db.execute(
            'SELECT lines_done, done, counts FROM dump_progress WHERE name = ?', (name,)
        ).fetchone()
        if row is None:
            return 0, False, {}
        return row[0], bool(row[1]), json.loads(row[2])

    def commit_dump_progress(
        self, name: str, lines_done: int, done: bool, counts: Dict[str, int]
    ) -> None:
        """Commit the comments inserted so far together with where the file stands."""
        self.db.execute(
            'INSERT OR REPLACE INTO dump_progress VALUES (?, ?, ?, ?)',
            (name, lines_done, int(done), json.dumps(counts)),
        )
        self.db.commit()

    # -- ingestion ---------------------------------------------------------------

    def insert_comment(self, row: CommentRow) -> bool:
        """Insert a comment; False when its id is already there (a duplicate)."""
        cursor = self.db.execute(
            'INSERT OR IGNORE INTO comments (id, parent, link, split, body) VALUES (?, ?, ?, ?, ?)',
            row,
        )
        return cursor.rowcount == 1

    def insert_submission(self, row: SubmissionRow) -> bool:
        """Insert a submission; False when its id is already there (a duplicate)."""
        cursor = self.db.execute('INSERT OR IGNORE INTO submissions (id, body) VALUES (?, ?)', row)
        return cursor.rowcount == 1

    # -- thread resolution ---------------------------------------------------------

    def resolve_threads(self) -> Iterable[int]:
        """Give every kept comment reachable from its submission its depth.

        Breadth first, one depth level per UPDATE (committed, so resumable),
        which needs no particular order of the rows: ids are not monotonic in
        the oldest months, and a reply may arrive in a later file than its
        parent. A comment whose chain meets a dropped or missing comment, or
        whose submission was dropped, is never reached. Comments beyond the
        depth limit are reached too (and counted as too deep): the limit is
        applied when choosing responses. Yields the number of comments
        resolved per level.
        """
        level = self._get_meta('resolved_level')
        if level is None:
            self.db.execute(
                'CREATE INDEX IF NOT EXISTS kept_by_parent ON comments (parent) WHERE body IS NOT NULL'
            )
            self.db.execute(
                'CREATE INDEX IF NOT EXISTS by_depth ON comments (depth) WHERE depth IS NOT NULL'
            )
            cursor = self.db.execute(
                'UPDATE comments AS c SET depth = 1 WHERE body IS NOT NULL AND parent IS NULL'
                f' AND NOT {_THREAD_DROPPED}'
            )
            self._set_meta('resolved_level', '1')
            self.db.commit()
            yield cursor.rowcount
            level = '1'
        if level == 'done':
            return
        depth = int(level)
        while True:
            cursor = self.db.execute(
                'UPDATE comments SET depth = ? WHERE body IS NOT NULL AND depth IS NULL'
                ' AND parent IN (SELECT id FROM comments WHERE depth = ?)',
                (depth + 1, depth),
            )
            resolved = cursor.rowcount
            depth += 1
            self._set_meta('resolved_level', str(depth) if resolved else 'done')
            self.db.commit()
            if not resolved:
                return
            yield resolved

    def reply_counts(self, max_depth: int) -> Dict[str, int]:
        """Kept comments that are not responses, by why not (``max_depth`` 0: no limit)."""

        def count(where: str, *args: object) -> int:
            query = f'SELECT COUNT(*) FROM comments c WHERE c.body IS NOT NULL AND {where}'
            return self.db.execute(query, args).fetchone()[0]

        unreached = 'c.depth IS NULL AND '
        parent_exists = 'EXISTS (SELECT 1 FROM comments p WHERE p.id = c.parent)'
        return {
            # a reply to a submission not in the dumps: its only use is as context
            'top_level': count(f'c.depth = 1 AND NOT {_TITLED}'),
            'parent_missing': count(unreached + f'c.parent IS NOT NULL AND NOT {parent_exists}'),
            'ancestor_dropped': count(unreached + f'(c.parent IS NULL OR {parent_exists})'),
            'too_deep': count('c.depth > ?', _depth_limit(max_depth)),
        }

    # -- examples --------------------------------------------------------------------

    def prepare_examples(self) -> None:
        self.db.execute(
            'CREATE INDEX IF NOT EXISTS responses ON comments (split, id) WHERE depth >= 1'
        )
        self.db.commit()

    def count_responses(self, split: int, max_depth: int) -> int:
        return self.db.execute(
            f'SELECT COUNT(*) FROM comments c WHERE c.split = ? AND {_RESPONSE}',
            (split, _depth_limit(max_depth)),
        ).fetchone()[0]

    def responses(
        self, split: int, after_id: int, limit: int, max_depth: int
    ) -> List[Tuple[int, Optional[int], int, str]]:
        """Up to ``limit`` (id, parent, link, body) of responses, in id order."""
        return self.db.execute(
            'SELECT c.id, c.parent, c.link, c.body FROM comments c'
            f' WHERE c.split = ? AND {_RESPONSE} AND c.id > ? ORDER BY c.id LIMIT ?',
            (split, _depth_limit(max_depth), after_id, limit),
        ).fetchall()

    def context(self, parent_id: Optional[int], link: int, max_turns: int) -> List[str]:
        """The last ``max_turns`` turns (0: all) before a response, oldest first.

        The turns are the bodies of its ancestors and, above them, the title
        of the thread's submission when the dumps have it.
        """
        turns: List[str] = []

        def room() -> bool:
            return not max_turns or len(turns) < max_turns

        current = parent_id
        while current is not None and room():
            body, current = self.db.execute(
                'SELECT body, parent FROM comments WHERE id = ?', (current,)
            ).fetchone()
            turns.append(body)
        if current is None and room():
            title = self.db.execute('SELECT body FROM submissions WHERE id = ?', (link,)).fetchone()
            if title is not None and title[0] is not None:
                turns.append(title[0])
        turns.reverse()
        return turns

    # -- shards ----------------------------------------------------------------------

    def shards(self, split: str) -> List[Tuple[str, int, int]]:
        """(file, examples, last response id) of the shards written, in order."""
        return self.db.execute(
            'SELECT file, examples, last_id FROM shards WHERE split = ? ORDER BY idx', (split,)
        ).fetchall()

    def commit_shard(self, split: str, idx: int, file: str, last_id: int, examples: int) -> None:
        self.db.execute(
            'INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?)',
            (split, idx, file, last_id, examples),
        )
        self.db.commit()
