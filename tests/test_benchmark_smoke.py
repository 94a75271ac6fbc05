"""The benchmarks run (tiny sizes, one rep): a check that they work, not a timing."""

from benchmarks import dispatch


def test_dispatch_benchmark_runs_and_checks_correctness(capsys):
    dispatch.main(['--ks', '2', '--ts', '64', '--reps', '1', '--no-bg-check', '--malloc-default'])
    out = capsys.readouterr().out
    for routing in ('random', 'balanced', 'even', 'switch', 'base'):
        assert f'| {routing} | 2 | 64 |' in out
    assert 'target: HASH >= 0.85x dense' in out


def test_model_benchmark_runs_every_model(capsys):
    from benchmarks import model
    model.main(['--steps', '1', '--replies', '1', '--dim', '16', '--ffn', '32', '--layers', '2',
                '--experts', '4', '--batch', '2', '--context', '8', '--label', '6',
                '--reply-len', '4', '--vocab', '50', '--malloc-default'])
    out = capsys.readouterr().out
    for name in ('dense', 'hash', 'switch', 'switch-dropless', 'base'):
        assert f'| {name} |' in out
    assert 'target: hash training >= 0.9x dense' in out


def test_expert_parallel_benchmark_runs(capsys):
    from benchmarks import expert_parallel
    expert_parallel.main(['--reps', '1', '--layers', '2', '--experts', '2', '--dim', '8',
                          '--ffn', '16', '--tokens', '16', '--vocab', '20'])
    out = capsys.readouterr().out
    for kind in ('hash-shared', 'hash-per-layer', 'switch'):
        assert f'| {kind} |' in out


def test_gpu_benchmark_smoke_runs_on_cpu(capsys):
    from benchmarks import gpu
    gpu.main(['--device', 'cpu', '--quick'])
    out = capsys.readouterr().out
    assert out.startswith('Device: CPU; dtype bfloat16')
    import re
    # A data row: K, T, dense ms, then grouped_mm and loop each with its ratio to dense.
    assert re.search(r'^\| 8 \| 512 \| [\d.]+ \| [\d.]+ \([\d.]+x\) \| [\d.]+ \([\d.]+x\) \|', out, re.M)
    assert 'Whole model' in out and 'x dense)' in out


def test_gpu_benchmark_says_when_there_is_no_gpu():
    import pytest
    import torch
    from benchmarks import gpu
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(SystemExit, match='no CUDA device'):
        gpu.main([])
