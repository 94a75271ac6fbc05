"""GEMM kernels over sorted rows and half-precision models (--fp16, --fp16-dtype, --expert-gemm).

On CPU both kernels run, so they are checked against each other and against
float32; the CUDA checks (grouped GEMM picked by ``auto``, bf16 on the device
vs float32 on CPU) run where a GPU is present.
"""

from __future__ import annotations

import pytest
import torch

from parlai_hash.dispatch import DispatchPlan
from parlai_hash.experts import ExpertFFN
from parlai_hash.grouped_gemm import choose_backend, grouped_linear

from conftest import TINY_MODEL_ARGS as TINY
from test_baselines import _agent, batch_of

COUNTS = [5, 0, 7, 4]  # an empty expert; 3 dropped rows after the kept 16
ROWS = sum(COUNTS) + 3


def _inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, 8, generator=g)
    w = torch.randn(len(COUNTS), 8, 16, generator=g) / 3
    b = torch.randn(len(COUNTS), 16, generator=g)
    return [t.to(dtype).requires_grad_() for t in (x, w, b)]


def _run(backend, x, w, b):
    y = grouped_linear(x, w, b, COUNTS, backend)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y, x.grad, w.grad, b.grad


def test_grouped_mm_kernel_equals_loop_kernel_in_float32():
    loop = _run('loop', *_inputs())
    grouped = _run('grouped_mm', *_inputs())
    for a, b in zip(loop, grouped):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    y, grad_x, grad_w, _ = grouped
    kept = sum(COUNTS)
    assert torch.equal(y[kept:], torch.zeros_like(y[kept:]))  # dropped rows: output 0 ...
    assert torch.equal(grad_x[kept:], torch.zeros_like(grad_x[kept:]))  # ... and no gradient
    assert torch.equal(grad_w[1], torch.zeros_like(grad_w[1]))  # the empty expert


def test_grouped_mm_takes_an_expanded_upstream_gradient():
    """``.sum()`` hands back a stride-0 gradient, which torch's grouped_mm backward rejects."""
    counts = [4, 8, 0, 4]  # 16-byte groups in float32 and no dropped rows: nothing re-lays the gradient
    grads = {}
    for backend in ('loop', 'grouped_mm'):
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*shape, generator=g).requires_grad_()
                   for shape in ((sum(counts), 8), (len(counts), 8, 16), (len(counts), 16)))
        grouped_linear(x, w, b, counts, backend).sum().backward()
        grads[backend] = (x.grad, w.grad, b.grad)
    for a, b in zip(grads['loop'], grads['grouped_mm']):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('backend', ['loop', 'grouped_mm'])
def test_half_precision_kernels_match_float32_within_its_tolerance(dtype, backend):
    ref = _run('loop', *_inputs())
    got = _run(backend, *_inputs(dtype))
    tol = 3e-2 if dtype == torch.bfloat16 else 5e-3
    for a, b in zip(ref, got):
        assert b.dtype == dtype
        torch.testing.assert_close(b.float(), a, rtol=tol, atol=tol * a.abs().max().item())


@pytest.mark.parametrize('capability, dtype, fast', [
    ((9, 0), torch.bfloat16, True), ((10, 0), torch.bfloat16, True),
    ((8, 0), torch.bfloat16, False), ((9, 0), torch.float16, False), ((9, 0), torch.float32, False)])
def test_auto_wants_the_grouped_gemm_only_where_torch_has_its_fused_kernel(monkeypatch, capability, dtype, fast):
    """Elsewhere torch's grouped GEMM is a host-synchronising loop over groups."""
    from parlai_hash import grouped_gemm

    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
    assert grouped_gemm.has_fast_grouped_mm(torch.device('cuda', 0), dtype) is fast
    assert grouped_gemm.has_fast_grouped_mm(torch.device('cpu'), dtype) is False


def test_auto_uses_the_loop_on_cpu_and_a_forced_kernel_is_kept():
    x, w, _ = _inputs(torch.bfloat16)
    assert choose_backend('auto', x, w) == 'loop'
    assert choose_backend('grouped_mm', x, w) == 'grouped_mm'
    with pytest.raises(ValueError, match='--expert-gemm'):
        ExpertFFN(2, 8, 16).set_gemm('cutlass')


def _hash_agent(tmp_path, dict_file, **extra):
    return _agent(tmp_path, dict_file, 'hash_generator', hash_type='random', dropout=0, **extra)


def _forced(agent, batch, ys):
    m = agent.model  # on a GPU machine ParlAI puts it on CUDA; batchify leaves the batch on CPU
    device = next(m.parameters()).device
    return m.decode_forced(m.encoder(batch.text_vec.to(device)), ys.to(device))[0]


def test_expert_gemm_option_reaches_every_layer_and_both_kernels_agree(tmp_path, dict_file):
    loop = _hash_agent(tmp_path, dict_file, expert_gemm='loop')
    grouped = _hash_agent(tmp_path, dict_file, expert_gemm='grouped_mm')
    assert {f.experts.gemm for f in grouped.model.sparse_ffns().values()} == {'grouped_mm'}
    grouped.model.load_state_dict(loop.model.state_dict())
    batch = batch_of(loop, [('1 2 3', '4 5 6'), ('7 8', '9 1 2 3')])
    ys = torch.tensor([[5, 6, 7, 8]]).expand(2, -1)
    outs = []
    for agent in (loop, grouped):
        agent.model.train()
        agent.model.zero_grad()
        out = _forced(agent, batch, ys)
        out.logsumexp(-1).mean().backward()
        outs.append((out, {n: p.grad for n, p in agent.model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    assert outs[0][1].keys() == outs[1][1].keys()
    for name in outs[0][1]:
        torch.testing.assert_close(outs[0][1][name], outs[1][1][name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('fp16_dtype, tol', [('bfloat16', 5e-2), ('float16', 1e-2)])
@pytest.mark.parametrize('model', ['hash_generator', 'base_generator'])
def test_half_model_matches_float32(tmp_path, dict_file, model, fp16_dtype, tol):
    """What ParlAI's --fp16 does to the model (``model.half()``), with --fp16-dtype.

    Seeded: BASE's learned assignment can flip a near-tie route in bf16 (seen for
    3 of 40 initialisations), which changes that token's output entirely."""
    torch.manual_seed(0)
    agent = _agent(tmp_path, dict_file, model, dropout=0, fp16_dtype=fp16_dtype)
    agent.model.eval()
    batch = batch_of(agent, [('1 2 3', '4 5 6'), ('7 8', '9 1 2 3')])
    ys = torch.tensor([[5, 6, 7]]).expand(2, -1)
    with torch.no_grad():
        ref = _forced(agent, batch, ys)
        agent.model.half()
        got = _forced(agent, batch, ys)
    want = getattr(torch, fp16_dtype)
    assert got.dtype == want
    assert {p.dtype for p in agent.model.parameters()} == {want}
    real = ref > -1e9  # ParlAI scores the padding token -1e20
    scale = ref[real].abs().max().item()
    torch.testing.assert_close(got.float()[real], ref[real], rtol=tol, atol=tol * scale)
    agent.model.train()
    _forced(agent, batch, ys).float().logsumexp(-1).mean().backward()
    grads = [p.grad for p in agent.model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == want and torch.isfinite(g).all() for g in grads)


def test_switch_routes_in_float32_in_a_bfloat16_model(tmp_path, dict_file):
    agent = _agent(tmp_path, dict_file, 'switch_generator', dropout=0, fp16_dtype='bfloat16')
    agent.model.half()
    ffn = next(iter(agent.model.sparse_ffns().values()))
    seen = {}
    linear = torch.nn.functional.linear

    def spy(inp, weight, *args):
        if weight.shape == ffn.router.router_weight.shape:
            seen['dtype'] = (inp.dtype, weight.dtype)
        return linear(inp, weight, *args)

    batch = batch_of(agent, [('1 2 3', '4 5 6')])
    torch.nn.functional.linear = spy
    try:
        out = _forced(agent, batch, torch.tensor([[5, 6]]))
    finally:
        torch.nn.functional.linear = linear
    assert seen['dtype'] == (torch.float32, torch.float32)
    assert out.dtype == torch.bfloat16


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
def test_cuda_bfloat16_uses_grouped_gemm_and_matches_float32_on_cpu():
    """Forward and backward, with groups of sizes that are not multiples of 8."""
    torch.manual_seed(0)
    moe = ExpertFFN(8, 64, 256)
    x = torch.randn(517, 64)
    experts = torch.randint(0, 8, (517,))
    keep = torch.rand(517) > 0.1
    grad = torch.randn(517, 64)
    plan = DispatchPlan.from_experts(experts, 8, keep=keep)
    xr = x.clone().requires_grad_()
    ref = moe(xr, plan)
    ref.backward(grad)
    gpu = ExpertFFN(8, 64, 256).cuda().to(torch.bfloat16)
    gpu.load_state_dict(moe.state_dict())
    xg = x.cuda().to(torch.bfloat16).requires_grad_()
    assert choose_backend('auto', xg, gpu.expert_w1) == 'grouped_mm'
    plan_g = DispatchPlan.from_experts(experts.cuda(), 8, keep=keep.cuda())
    got = gpu(xg, plan_g)
    got.backward(grad.cuda().to(torch.bfloat16))

    torch.testing.assert_close(got.float().cpu(), ref, rtol=3e-2, atol=3e-2 * ref.abs().max().item())

    def relative_error(a, b):
        # Gradients through the ReLU: bf16 rounding flips the sign of near-zero
        # pre-activations, so ~1% of elements differ outright (the same on CPU
        # in bf16, either kernel); the norm of the difference stays small
        # (0.035 on CPU in bf16; 1.3 with tokens sent to the wrong experts).
        return ((a.float().cpu() - b).norm() / b.norm()).item()

    assert relative_error(xg.grad, xr.grad) < 8e-2
    for name, param in moe.named_parameters():
        assert relative_error(dict(gpu.named_parameters())[name].grad, param.grad) < 8e-2, name


@pytest.mark.parametrize('option, value', [('--expert-gemm', 'cutlass'), ('--fp16-dtype', 'float8')])
def test_bad_kernel_or_half_dtype_is_refused_naming_the_option(option, value, capsys):
    from parlai.core.params import ParlaiParser

    with pytest.raises(SystemExit):
        ParlaiParser(True, True).parse_args(['-m', 'hash_generator', option, value])
    assert f"argument {option}: invalid choice: '{value}'" in capsys.readouterr().err


def test_grouped_mm_probe_does_not_depend_on_the_callers_grad_mode(monkeypatch):
    from parlai_hash import grouped_gemm

    monkeypatch.setattr(grouped_gemm, '_PROBED', {})
    cpu = torch.device('cpu')
    with torch.no_grad():  # e.g. the first forward is generation
        in_no_grad = grouped_gemm.grouped_mm_available(cpu, torch.float32)
    monkeypatch.setattr(grouped_gemm, '_PROBED', {})
    with torch.inference_mode():
        in_inference = grouped_gemm.grouped_mm_available(cpu, torch.float32)
    monkeypatch.setattr(grouped_gemm, '_PROBED', {})
    assert in_no_grad == in_inference == grouped_gemm.grouped_mm_available(cpu, torch.float32) is True
    assert grouped_gemm.grouped_mm_available(cpu, torch.float64) is False  # probed, not listed


def test_padded_rows_align_every_group_and_keep_the_order():
    from parlai_hash.grouped_gemm import padded_rows

    groups, where = padded_rows([5, 0, 7, 8, 1], 8)
    assert groups == [8, 0, 8, 8, 8]
    assert where.tolist() == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24]


def test_grouped_mm_pads_groups_in_training_only(monkeypatch):
    import parlai_hash.grouped_gemm as gg

    seen = []
    real = gg._grouped_mm

    def spy(a, b, offs):
        seen.append(offs.tolist())
        return real(a, b, offs=offs)

    monkeypatch.setattr(gg, '_grouped_mm', spy)
    x, w, b = _inputs(torch.bfloat16)
    grouped_linear(x, w, b, COUNTS, 'grouped_mm')  # needs a gradient: groups of 8 rows
    with torch.no_grad():
        grouped_linear(x, w, b, COUNTS, 'grouped_mm')
    assert seen == [[8, 8, 16, 24], [5, 5, 12, 16]]


def test_grouped_mm_with_every_row_dropped_gives_zeros_and_zero_gradients():
    x, w, b = _inputs()
    y = grouped_linear(x, w, b, [0] * len(COUNTS), 'grouped_mm')
    y.sum().backward()  # an expanded (stride 0) gradient
    assert torch.equal(y, torch.zeros_like(y))
    assert x.grad is None or torch.equal(x.grad, torch.zeros_like(x))  # no contribution
    for t in (w, b):  # the weights stay in the graph (DDP expects a gradient for each)
        assert torch.equal(t.grad, torch.zeros_like(t))


@pytest.mark.parametrize('dim, dtype, why', [
    (6, torch.float32, 'multiples of 4'),
    (8, torch.float64, 'does not run for float64'),
])
def test_forced_grouped_mm_that_cannot_run_names_the_option(dim, dtype, why):
    from parlai_hash.errors import OptionError

    x = torch.randn(4, dim, dtype=dtype)
    w = torch.randn(2, dim, 8, dtype=dtype)
    with pytest.raises(OptionError, match=f'^--expert-gemm: grouped_mm cannot be used here: .*{why}'):
        grouped_linear(x, w, torch.zeros(2, 8, dtype=dtype), [2, 2], 'grouped_mm')
    assert choose_backend('auto', x, w) == 'loop'


def test_bfloat16_under_fsdp_is_refused_naming_the_option(tmp_path, dict_file):
    from parlai_hash.errors import OptionError

    from parlai.core.agents import create_agent
    from parlai.scripts.multiprocessing_train import setup_args

    opt = setup_args().parse_args([
        '-m', 'hash_generator', '-t', 'integration_tests', '--dict-file', dict_file,
        '-mf', str(tmp_path / 'm'), *TINY, '--fp16', 'true', '--fp16-dtype', 'bfloat16',
        '--ddp-backend', 'zero2'])
    with pytest.raises(OptionError, match='^--fp16-dtype: bfloat16 is not applied under --ddp-backend zero2'):
        create_agent(opt)
