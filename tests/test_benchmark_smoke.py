"""The benchmarks run (tiny sizes, one rep): a check that they work, not a timing."""

import json
import math
import re

from benchmarks import dispatch


def test_dispatch_benchmark_runs_and_checks_correctness(capsys):
    dispatch.main(['--ks', '2', '--ts', '64', '--reps', '1', '--no-bg-check', '--malloc-default',
                   '--no-top2'])
    out = capsys.readouterr().out
    for routing in ('random', 'balanced', 'even', 'switch', 'switch-cf1.25', 'base'):
        assert f'| {routing} | 2 | 64 |' in out
    assert 'target: HASH >= 0.85x dense' in out
    assert 'Top-2 routing' not in out


def test_dispatch_benchmark_top2_rows(capsys, monkeypatch, tmp_path):
    # Tiny layers: the rows' code paths, not their speed (no timing is asserted).
    monkeypatch.setattr(dispatch, 'D_MODEL', 32)
    monkeypatch.setattr(dispatch, 'D_HIDDEN', 64)
    record = tmp_path / 'top2.json'
    dispatch.main(['--top2-only', '--top2-ks', '4', '--top2-ts', '96', '--reps', '2',
                   '--no-bg-check', '--malloc-default', '--json', str(record)])
    out = capsys.readouterr().out
    assert out.startswith('Top-2 routing, fwd+bwd, d=32, experts of hidden D=64')
    assert '| routing | K | T |' not in out  # --top2-only: no k=1 grid
    number = r'(\d+(?:\.\d+)?)'
    ci = rf'{number}x \[{number}-{number}\]'
    rows = {}
    for name, k, hidden in (('hash-k1', 1, 64), ('hash-k1-layer', 1, 64), ('hash-top2-uniform', 2, 128),
                            ('hash-top2-learned', 2, 128), ('switch-top2', 2, 128)):
        m = re.search(rf'^\| {name} \| {k} \| 4 \| 96 \| {number} \({hidden}; {number}\) '
                      rf'\| {number} \({number}x\) \| {ci} \| (—|{ci}) \| (\d+)/(\d+) = {number} \| \d+ \|$',
                      out, re.M)
        assert m, (name, out)
        rows[name] = m
        values = [float(v) for v in m.groups() if v not in (None, '—') and not v.endswith(']')]
        assert all(math.isfinite(v) for v in values), (name, m.group(0))  # tiny: may print 0 ms
        # Load: all k choices of the 96 tokens over 4 experts; the busiest carries at least the mean.
        assert int(m.group(13)) == 96 * k // 4 <= int(m.group(12)) <= 96, m.group(0)
    assert rows['hash-k1-layer'].group(8) != '—'  # paired against the k=1 path
    assert all(rows[n].group(8) == '—' for n in rows if n != 'hash-k1-layer')
    assert re.search(r'^target: top-2 >= 0\.8x dense \(hidden 2·D = 128\) at K=4, T=96: '
                     r'hash-top2-uniform .*; hash-top2-learned .*; switch-top2 [^;]*$', out, re.M), out
    assert re.search(r'^k=1: the layer path .* at K=4, T=96: ', out, re.M), out
    # Every row was checked against LOOP before timing (it raises otherwise); the record keeps the errors.
    data = json.loads(record.read_text())
    assert [r['name'] for r in data['top2_rows']] == list(dispatch.TOP2_ROWS)
    assert data['rows'] == []
    for r in data['top2_rows']:
        assert len(r['samples_ms'][r['name']]) == 2
        timings = [r['dense_ms'], r['sparse_ms'], r['ratio'], *r['per_round'], *r['samples_ms'][r['name']]]
        assert all(math.isfinite(v) and v > 0 for v in timings), r
        assert r['dense_hidden'] == r['k'] * 64 and r['load_mean'] == 96 * r['k'] / 4
        assert r['check'] and all(v < dispatch.CHECK_RTOL for v in r['check'].values()), r
    router_grads = {r['name']: sorted(k for k in r['check'] if k.startswith('router.'))
                    for r in data['top2_rows']}
    assert router_grads == {'hash-k1': [], 'hash-k1-layer': [], 'hash-top2-uniform': [],
                            'hash-top2-learned': ['router.gate.weight'],
                            'switch-top2': ['router.router_bias', 'router.router_weight']}


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
