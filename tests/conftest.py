"""Shared test helpers: tiny model options, paths, the real ``parlai`` command."""

from __future__ import annotations

import os
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
