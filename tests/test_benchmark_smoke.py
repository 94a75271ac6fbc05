"""The benchmarks run (tiny sizes, one rep): a check that they work, not a timing."""

from benchmarks import dispatch


def test_dispatch_benchmark_runs_and_checks_correctness(capsys):
    dispatch.main(['--ks', '2', '--ts', '64', '--reps', '1', '--no-bg-check', '--malloc-default'])
    out = capsys.readouterr().out
    for routing in ('random', 'balanced', 'even', 'switch', 'base'):
        assert f'| {routing} | 2 | 64 |' in out
    assert 'target: HASH >= 0.85x dense' in out
