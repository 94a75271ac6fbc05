"""Reuse a finished identical run instead of training it again.

Sweeps share points: Table 3's dense baseline, balanced 1x64 and 5x16 are
``modern_hash``'s baseline, ``hash_1x64`` and ``hash_5x16``, option for option.
Training is deterministic on a CPU (the same options and seed give the same
perplexities to the last digit), so a point whose options, scale and seed equal
those of a finished run in any sweep's runs folder takes that run: its files
are hard-linked into the point's run folder (copied across file systems) and
its record is rewritten under this point's name, with ``reused_from`` naming the
run that trained. Identity is the same test ``run`` already uses to refuse a
stale record: the point's options. ``run --no-reuse`` trains anyway.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from parlai_hash.sweeps.claim import LOCK_FILE, claim, release
from parlai_hash.sweeps.records import read_record, write_record
from parlai_hash.sweeps.runner import point_payload, write_point
from parlai_hash.sweeps.spec import Point, Sweep

#: Files of a run folder that belong to the point, not to the trained model.
OWN_FILES = {'record.json', 'point.json', LOCK_FILE}


def identity(scale: str, options: Mapping[str, Any], seed: int) -> str:
    """What makes two runs the same run (options as a record stores them)."""
    return json.dumps([scale, json.loads(json.dumps(options)), seed], sort_keys=True)


def finished_runs(runs_root: Path, scale: str) -> Dict[str, Path]:
    """Identity -> run folder, for every finished run of ``scale`` under
    ``runs_root/<sweep>/<scale>/`` (seed folders included)."""
    index: Dict[str, Path] = {}
    for record_file in sorted(runs_root.glob(f'*/{scale}/**/record.json')):
        record = read_record(record_file)
        if not record or 'options' not in record or 'seed' not in record:
            continue
        trained_in = Path(record.get('reused_from') or record_file.parent)
        index.setdefault(identity(scale, record['options'], record['seed']), trained_in)
    return index


def twin_of(point: Point, index: Mapping[str, Path]) -> Optional[Path]:
    """The finished run ``point`` would reproduce, if any (never itself)."""
    twin = index.get(identity(point.scale, point.options, point.seed))
    if twin is None or twin.resolve() == point.run_dir.resolve() or read_record(twin / 'record.json') is None:
        return None
    return twin


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        target.unlink()  # a leftover of an interrupted run of this point
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def adopt(sweep: Sweep, point: Point, twin: Path, by_name: Mapping[str, Point]) -> bool:
    """Make ``twin``'s finished run this point's; False if another run is training it."""
    if claim(point.run_dir) is not None:
        return False
    try:
        for source in sorted(twin.iterdir()):
            if source.is_file() and source.name not in OWN_FILES:
                _link_or_copy(source, point.run_dir / source.name)
        write_point(sweep, point, dict(by_name))
        payload = point_payload(sweep, point, dict(by_name))
        record = dict(read_record(twin / 'record.json') or {})
        record.update({key: payload[key] for key in ('sweep', 'scale', 'model', 'configuration', 'metric',
                                                      'options', 'command', 'argv', 'seed', 'depends_on')})
        record['point'] = point.name
        record['reused_from'] = str(twin)
        record.pop('finished_at', None)
        write_record(point.record_file, record)
    finally:
        release(point.run_dir)
    return True
