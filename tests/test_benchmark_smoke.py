"""The benchmarks run (tiny sizes, one rep): a check that they work, not a timing."""

import re

from benchmarks import dispatch


def test_dispatch_benchmark_runs_and_checks_correctness(capsys):
    dispatch.main(['--ks', '2', '--ts', '64', '--reps', '1', '--no-bg-check', '--malloc-default'])
    out = capsys.readouterr().out
    for routing in ('random', 'balanced', 'even', 'switch', 'switch-cf1.25', 'base'):
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
    assert 'tokens computed by experts' in out
    rows = {line.split('|')[1].strip(): line.split('|')[2:-1] for line in out.splitlines()
            if line.startswith('| ') and not line.startswith('| model')}
    # Hash, BASE and dropless Switch compute every real token; dense has no experts.
    for name in ('hash', 'base', 'switch-dropless'):
        assert rows[name][5].strip() == '100%', (name, rows[name])
    assert rows['dense'][5].strip() == rows['dense'][6].strip() == '-'
    # Parameters, by construction: one sparse layer of K=4 experts (d=16, D=32) in place of
    # one dense FFN adds K-1 FFNs; Switch adds its [K, d] router to that, dropless or not.
    params = {name: int(r[0].strip().replace(',', '')) for name, r in rows.items()}
    assert params['hash'] - params['dense'] == (4 - 1) * (16 * 32 + 32 + 32 * 16 + 16)
    assert params['switch'] - params['hash'] == params['switch-dropless'] - params['hash'] == 4 * 16 + 4  # W, b
    # Load max/mean of K experts lies in [1, K].
    for name in ('hash', 'switch', 'switch-dropless', 'base'):
        assert 1.0 <= float(rows[name][6]) <= 4.0, (name, rows[name])


def test_model_benchmark_verdict_uses_paired_ratios():
    from benchmarks import model

    def results(dense, hash_, switch, computed=1.0):
        return {'dense': {'train_samples': dense, 'reply_samples': dense},
                'hash': {'train_samples': hash_, 'reply_samples': hash_},
                'switch': {'train_samples': switch, 'reply_samples': switch, 'computed': computed}}

    # Per round: hash/dense 0.95 every time, switch a little slower than hash.
    lines = model.verdict(results([100, 50, 200, 80], [95, 47.5, 190, 76], [90, 45, 180, 72]))
    assert lines[0].endswith('>= 0.9x dense tokens/s: met')
    assert lines[1].endswith('(hash/switch 1.06x): met')
    assert lines[2].endswith('<= 1.1x dense latency: met')
    # Paired ratios that straddle the target are not a verdict either way.
    lines = model.verdict(results([100, 100, 100, 100], [80, 88, 92, 99], [100, 100, 100, 100], 0.1))
    assert 'not settled by this run (median' in lines[0]
    assert 'NOT met' in lines[1] and 'computed only 10% of the tokens' in lines[1]
    # 95% CI of a median by order statistics: x_(6)..x_(15) of 20; too few values: the range.
    assert model.median_ci([float(v) for v in range(20, 0, -1)]) == (6.0, 10.5, 15.0)
    assert model.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == (1.0, 3.0, 5.0)


def test_expert_parallel_benchmark_runs(capsys):
    from benchmarks import expert_parallel
    expert_parallel.main(['--reps', '1', '--layers', '2', '--experts', '2', '--dim', '8',
                          '--ffn', '16', '--tokens', '16', '--vocab', '20'])
    out = capsys.readouterr().out
    # Checked against the single-process layers before timing (it raises otherwise).
    assert re.search(r'^check ok: every routing.s expert-parallel step matches the single-process '
                     r'layers .*worst rel err \S+ < ', out, re.M), out
    for kind in ('hash-shared', 'hash-per-layer', 'switch'):
        row = re.search(rf'^\| {kind} \| ([^|]+) \| ([^|]+)x \|$', out, re.M)
        assert row, (kind, out)
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0, row.group(0)


def test_gpu_benchmark_smoke_runs_on_cpu(capsys):
    from benchmarks import gpu
    gpu.main(['--device', 'cpu', '--quick'])
    out = capsys.readouterr().out
    assert out.startswith('Device: CPU; dtype bfloat16')
    # A data row: K, T, dense ms, then grouped_mm and loop each with its ratio to dense.
    assert re.search(r'^\| 8 \| 512 \| [\d.]+ \| [\d.]+ \([\d.]+x\) \| [\d.]+ \([\d.]+x\) \|', out, re.M)
    # The timed sparse steps were checked (output and input gradient) before timing.
    assert re.search(r'^check ok: grouped_mm and loop match a float32 copy of the layer and each '
                     r'other, output and input gradient \(worst relative norm error \S+ < 0\.05 '
                     r'for bfloat16\)', out, re.M), out
    assert 'Whole model' in out and 'x dense)' in out


def test_gpu_benchmark_says_when_there_is_no_gpu():
    import pytest
    import torch
    from benchmarks import gpu
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(SystemExit, match='no CUDA device'):
        gpu.main([])
