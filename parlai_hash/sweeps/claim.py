"""One trainer per run folder: a lock that a second ``run`` respects.

Two ``run --local`` processes over the same sweep (two terminals, or a
``--jobs`` run next to an older one) would otherwise train the same point into
the same folder and overwrite each other's checkpoints. The runner holds an
exclusive ``flock`` on ``<run_dir>/.training`` while the point trains; the
kernel drops it when the runner exits, however it exits, so a killed run never
leaves a stale lock behind. The file names the holder's pid for messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

try:
    import fcntl
except ImportError:  # not POSIX: no locking, as before
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = '.training'

_held: Dict[Path, int] = {}  # run_dir -> open descriptor holding its lock


def claim(run_dir: Path) -> Optional[str]:
    """Lock ``run_dir`` for this process: None on success, else who holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return None
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode('ascii', 'replace').strip() or '?'
        os.close(fd)
        return f'pid {holder}'
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode('ascii'))
    _held[run_dir] = fd
    return None


def release(run_dir: Path) -> None:
    """Unlock ``run_dir`` (a no-op if this process does not hold it)."""
    fd = _held.pop(run_dir, None)
    if fd is not None:
        os.close(fd)  # closing drops the flock
