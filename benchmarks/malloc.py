"""Allocator settings shared by the benchmarks.

glibc serves tensors above its mmap threshold (at most 32 MB) with fresh
mmaps, so every large tensor freed and allocated again each step is
page-faulted again: K stacked expert gradients (67 MB each at K=64, d=256,
D=1024) cost ~30K faults per step. Retaining freed memory, as jemalloc or
tcmalloc would, removes that for every model alike. The benchmarks re-execute
themselves under these settings (``--malloc-default`` keeps glibc's), so all
variants are measured under the same allocator; the README shows how to train
with them.
"""

from __future__ import annotations

import os
import sys

MALLOC_ENV = {
    'MALLOC_ARENA_MAX': '1',
    'MALLOC_MMAP_MAX_': '0',
    'MALLOC_TRIM_THRESHOLD_': str(2**40),
    'MALLOC_TOP_PAD_': str(256 * 2**20),
}


def maybe_reexec(malloc_default: bool) -> None:
    """Restart under the retained-malloc settings unless off or already set."""
    if malloc_default or all(k in os.environ for k in MALLOC_ENV):
        return
    env = dict(os.environ)
    for key, value in MALLOC_ENV.items():
        env.setdefault(key, value)  # a value the caller set wins
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
