"""Shared test helpers: tiny model options, paths, the real ``parlai`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
SHARED_DATA = SHARED / 'data'
PARLAI = str(Path(sys.executable).with_name('parlai'))

TINY_MODEL_ARGS = [
    '--n-layers', '3', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
    '--num-experts', '4',
]


def requires_shared(path: Path):
    return pytest.mark.skipif(
        not path.exists(), reason=f"real data not present: {path} (../shared is absent)"
    )


@pytest.fixture
def cli_env():
    env = dict(os.environ)
    env.pop('PARLAI_DATAPATH', None)
    env['PYTHONWARNINGS'] = 'ignore'
    return env


def run_parlai(*args: str, cwd=None, stdin=None, check: bool = True, env=None):
    """The real ``parlai`` command; with ``check``, fail showing its output."""
    proc = subprocess.run([PARLAI, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, input=stdin, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"parlai {' '.join(args)} failed:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
