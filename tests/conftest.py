"""Shared test helpers: tiny model options, paths, the real ``parlai`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
SHARED_DATA = SHARED / 'data'
#: The two complete comment months of the shared pushshift dumps.
REDDIT_MONTHS = ('RC_2005-12', 'RC_2006-01')


def link_reddit_months(folder: Path) -> Path:
    """``folder`` holding the shared comment months as pushshift publishes them (.zst), nothing else."""
    for month in REDDIT_MONTHS:
        os.symlink(SHARED_DATA / 'reddit' / f'{month}.zst', folder / f'{month}.zst')
    return folder
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


def fake_srun(tasks: int, argv: List[str], cwd: Path, env: Optional[Dict[str, str]] = None) -> List[str]:
    """What ``srun --ntasks N ARGV`` does on one node: N processes told their rank by SLURM's variables.

    ParlAI asks ``scontrol show hostnames`` for the main host; a stand-in on PATH
    answers localhost. Returns each task's output; fails showing those that failed.
    """
    bin_dir = cwd / 'slurm_bin'
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / 'scontrol'
    scontrol.write_text('#!/bin/sh\n# "scontrol show hostnames NODELIST": one node\necho localhost\n')
    scontrol.chmod(0o755)
    procs = []
    for rank in range(tasks):
        task_env = dict(os.environ, **(env or {}), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                        PYTHONWARNINGS='ignore', SLURM_JOB_ID='4242', SLURM_JOB_NODELIST='localhost',
                        SLURM_NTASKS=str(tasks), SLURM_NODEID='0', SLURM_PROCID=str(rank),
                        SLURM_LOCALID=str(rank))
        task_env.pop('PARLAI_DATAPATH', None)
        procs.append(subprocess.Popen(argv, cwd=cwd, env=task_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            proc.kill()
    failed = [(rank, out) for rank, (proc, out) in enumerate(zip(procs, outputs)) if proc.returncode]
    assert not failed, '\n'.join(f'task {rank} failed:\n{out[-3000:]}' for rank, out in failed)
    return outputs


def free_port() -> int:
    from parlai.utils.distributed import find_free_port

    return find_free_port()


def leave_process_group() -> None:
    """Tear down a test worker's gloo group once every rank got here.

    A rank that destroys its group and exits while another is still inside a
    gloo call can abort that one ("terminate called without an active
    exception", SIGABRT). The barrier is monitored: a rank that failed before
    reaching it makes the others raise after a minute instead of hanging.
    """
    from datetime import timedelta

    import torch.distributed as dist

    try:
        dist.monitored_barrier(timeout=timedelta(seconds=60))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def dict_file(tmp_path_factory) -> str:
    """A dictionary of ParlAI's offline ``integration_tests:nocandidate`` task, built once per module."""
    from parlai.scripts.build_dict import BuildDict

    path = str(tmp_path_factory.mktemp('dict') / 'model.dict')
    BuildDict.main(task='integration_tests:nocandidate', dict_file=path)
    return path
