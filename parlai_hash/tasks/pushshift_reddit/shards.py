"""The built files: JSON-lines shards per split and the manifest that lists them.

A build is complete exactly when ``manifest.json`` exists. It is written last
and atomically, and the teacher reads only the shards it lists, so a build
that was interrupted (or failed on a truncated dump) is never read as data.
Each shard is also written atomically, so a listed shard is always whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from parlai_hash.io_utils import atomic_write

MANIFEST = 'manifest.json'
#: Bump when the shard or manifest layout changes; older builds are rebuilt.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Example:
    context: List[str]
    response: str
    comment_id: str
    link_id: str

    def to_json(self) -> str:
        return json.dumps(
            {
                'context': self.context,
                'response': self.response,
                'comment_id': self.comment_id,
                'link_id': self.link_id,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, line: str) -> 'Example':
        return cls(**json.loads(line))


SHARD_GLOB = '*.jsonl'


def shard_name(split: str, idx: int) -> str:
    return f'{split}/{idx:05d}.jsonl'


#: atomic_write's temporary files are private (0600); data files are for everyone
#: who can read the data folder.
DATA_FILE_MODE = 0o644


def write_shard(build_dir: Path, name: str, examples: Sequence[Example]) -> None:
    with atomic_write(build_dir / name) as handle:
        for example in examples:
            handle.write(example.to_json() + '\n')
    os.chmod(build_dir / name, DATA_FILE_MODE)


def read_shard(build_dir: Path, name: str) -> List[Example]:
    with open(build_dir / name, encoding='utf-8') as handle:
        return [Example.from_json(line) for line in handle]


@dataclass(frozen=True)
class ShardInfo:
    file: str
    examples: int


@dataclass(frozen=True)
class Manifest:
    splits: Dict[str, List[ShardInfo]]
    stats: Dict[str, int]
    #: What was built from what: dump files and every option that shapes the data.
    fingerprint: Dict[str, object]

    def examples(self, split: str) -> int:
        return sum(shard.examples for shard in self.splits.get(split, []))

    def write(self, build_dir: Path) -> None:
        payload = {
            'format': FORMAT_VERSION,
            'splits': {
                split: [{'file': s.file, 'examples': s.examples} for s in shards]
                for split, shards in self.splits.items()
            },
            'stats': self.stats,
            'fingerprint': self.fingerprint,
        }
        with atomic_write(build_dir / MANIFEST) as handle:
            json.dump(payload, handle, indent=1)
        os.chmod(build_dir / MANIFEST, DATA_FILE_MODE)


def read_manifest(build_dir: Path) -> Optional[Manifest]:
    """The manifest of a complete build in ``build_dir``, or None."""
    try:
        with open(build_dir / MANIFEST, encoding='utf-8') as handle:
            payload = json.load(handle)
    except FileNotFoundError:
        return None
    if payload.get('format') != FORMAT_VERSION:
        return None
    return Manifest(
        splits={
            split: [ShardInfo(**shard) for shard in shards]
            for split, shards in payload['splits'].items()
        },
        stats=payload['stats'],
        fingerprint=payload['fingerprint'],
    )
