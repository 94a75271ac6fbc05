"""The on-disk comment index (SQLite) that joins replies to their parents.

A reply and its parent may be in different monthly files, and a month does
not fit in memory, so every comment goes into one table keyed by its id.
Dropped comments are kept as rows without a body: their replies must know
that the parent existed but was filtered (and so drop out too), as opposed
to a parent missing from the dumps.

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
    depth INTEGER            -- turns below the submission; NULL when not reachable
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

    # -- thread resolution ---------------------------------------------------------

    def resolve_threads(self) -> Iterable[int]:
        """Give every kept comment reachable from its submission its depth.

        Breadth first, one depth level per UPDATE (committed, so resumable),
        which needs no particular order of the rows: ids are not monotonic in
        the oldest months, and a reply may arrive in a later file than its
        parent. A comment whose chain meets a dropped or missing comment is
        never reached. Yields the number of comments resolved per level.
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
                'UPDATE comments SET depth = 0 WHERE body IS NOT NULL AND parent IS NULL'
            )
            self._set_meta('resolved_level', '0')
            self.db.commit()
            yield cursor.rowcount
            level = '0'
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

    def reply_counts(self) -> Dict[str, int]:
        """Kept comments by what they can be: thread starters, responses, or neither."""
        counts = {}
        counts['top_level'] = self.db.execute(
            'SELECT COUNT(*) FROM comments WHERE depth = 0'
        ).fetchone()[0]
        counts['parent_missing'] = self.db.execute(
            'SELECT COUNT(*) FROM comments c WHERE c.body IS NOT NULL AND c.depth IS NULL'
            ' AND NOT EXISTS (SELECT 1 FROM comments p WHERE p.id = c.parent)'
        ).fetchone()[0]
        counts['ancestor_dropped'] = self.db.execute(
            'SELECT COUNT(*) FROM comments c WHERE c.body IS NOT NULL AND c.depth IS NULL'
            ' AND EXISTS (SELECT 1 FROM comments p WHERE p.id = c.parent)'
        ).fetchone()[0]
        return counts

    # -- examples --------------------------------------------------------------------

    def prepare_examples(self) -> None:
        self.db.execute(
            'CREATE INDEX IF NOT EXISTS responses ON comments (split, id) WHERE depth >= 1'
        )
        self.db.commit()

    def count_responses(self, split: int) -> int:
        return self.db.execute(
            'SELECT COUNT(*) FROM comments WHERE split = ? AND depth >= 1', (split,)
        ).fetchone()[0]

    def responses(self, split: int, after_id: int, limit: int) -> List[Tuple[int, int, int, str]]:
        """Up to ``limit`` (id, parent, link, body) of responses, in id order."""
        return self.db.execute(
            'SELECT id, parent, link, body FROM comments'
            ' WHERE split = ? AND depth >= 1 AND id > ? ORDER BY id LIMIT ?',
            (split, after_id, limit),
        ).fetchall()

    def context(self, parent_id: int, max_turns: int) -> List[str]:
        """The bodies of up to ``max_turns`` ancestors, oldest first."""
        turns = []
        current: Optional[int] = parent_id
        while current is not None and len(turns) < max_turns:
            body, current = self.db.execute(
                'SELECT body, parent FROM comments WHERE id = ?', (current,)
            ).fetchone()
            turns.append(body)
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
