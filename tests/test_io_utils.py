"""atomic_write: all or nothing, with ordinary permissions."""

import os
import stat

import pytest

from parlai_hash.io_utils import atomic_write


def test_writes_whole_file_with_umask_mode(tmp_path):
    path = tmp_path / 'sub' / 'out.txt'
    with atomic_write(path) as f:
        f.write('hello')
    assert path.read_text() == 'hello'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write('half')
            raise RuntimeError('interrupted')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['out.txt']
