"""Grouped GEMM on expert-sorted rows: ``y[rows of e] = x[rows of e] @ W[e] + b[e]``.

One layout (rows sorted by expert, ``counts`` rows each, rows past
``sum(counts)`` dropped), two kernels:

* ``loop``: one ``addmm`` per expert. Any device and dtype; the fastest we
  measured on CPU (benchmarks/RESULTS.md), so ``auto`` uses it there.
* ``grouped_mm``: torch's grouped GEMM (``F.grouped_mm``), one kernel for all
  experts. torch documents it for bfloat16 on CUDA (SM >= 80); ``auto`` picks
  it only where a probe call succeeds for that device and dtype and the
  sizes meet its alignment rule (16-byte rows: ``d`` and ``D`` multiples of 8
  in bfloat16). On CPU it exists too (a loop in C++), which lets the tests
  check it against ``loop``.

Dropped rows get output 0 and gradient 0 whatever the kernel: grouped_mm
leaves rows past the last offset unwritten, so it only ever sees kept rows.
In training, grouped_mm gets each expert's rows padded with zero rows to a
multiple of 16 bytes (see ``grouped_mm_linear``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

GEMM_BACKENDS = ('auto', 'loop', 'grouped_mm')

_grouped_mm = getattr(F, 'grouped_mm', None) or getattr(torch, '_grouped_mm', None)
_PROBED: Dict[Tuple[str, torch.dtype], bool] = {}


# ------------------------------------------------------------------ loop kernel

def _loop_forward(x, weight, bias, counts: List[int]) -> torch.Tensor:
    out = x.new_empty(x.shape[0], weight.shape[2])
    out[sum(counts) :].zero_()  # rows no expert computes (dropped tokens)
    start = 0
    for e, n in enumerate(counts):
        if n:
            end = start + n
            torch.addmm(bias[e], x[start:end], weight[e], out=out[start:end])
            start = end
    return out


class LoopGroupedLinear(torch.autograd.Function):
    """The ``loop`` kernel as one autograd Function.

    Weight gradients go straight into one ``[K, a, b]`` buffer; indexing a
    stacked parameter per expert under autograd would allocate a full-size
    zero gradient per expert.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, counts):  # type: ignore[override]
        ctx.counts = counts
        ctx.save_for_backward(x, weight)
        return _loop_forward(x, weight, bias, counts)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        counts = ctx.counts
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if need_x:
            grad_x = torch.empty_like(x)
            grad_x[sum(counts) :].zero_()
        if need_w:
            grad_w = torch.empty_like(weight)
        if need_b:
            grad_b = grad_out.new_empty(weight.shape[0], weight.shape[2])
            # Each expert's bias gradient as a GEMM (ones @ rows): with a reduction
            # op between the GEMMs this loop ran ~20% slower on CPU (measured,
            # 2 threads); as a GEMM it stays in MKL.
            ones = grad_out.new_ones(1, max(counts, default=0))
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                if need_w:
                    grad_w[e].zero_()
                if need_b:
                    grad_b[e].zero_()
                continue
            end = start + n
            g = grad_out[start:end]
            if need_x:
                torch.mm(g, weight[e].t(), out=grad_x[start:end])
            if need_w:
                torch.mm(x[start:end].t(), g, out=grad_w[e])
            if need_b:
                torch.mm(ones[:, :n], g, out=grad_b[e : e + 1])
            start = end
        return grad_x, grad_w, grad_b, None


def loop_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                counts: List[int]) -> torch.Tensor:
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return LoopGroupedLinear.apply(x, weight, bias, counts)
    # Inference (generation decodes one token per step): skip autograd's overhead.
    return _loop_forward(x, weight, bias, counts)


# ----------------------------------------------------------- grouped_mm kernel

def device_ints(values: List[int], device: torch.device) -> torch.Tensor:
    """``values`` as an int64 tensor on ``device``; on CUDA through pinned memory
    with a non-blocking copy, so it does not wait for the GPU's queue."""
    t = torch.tensor(values, dtype=torch.int64)
    if device.type != 'cuda':
        return t
    return t.pin_memory().to(device, non_blocking=True)


def rows_per_16_bytes(dtype: torch.dtype) -> int:
    """grouped_mm's alignment unit (its loads are 16 bytes): 8 in bf16, 4 in float32."""
    return 16 // dtype.itemsize


def padded_rows(counts: List[int], align: int, device: torch.device = torch.device('cpu'),
                counts_t: Optional[torch.Tensor] = None) -> Tuple[List[int], torch.Tensor]:
    """Each expert's group rounded up to ``align`` rows: the padded group sizes,
    and where each kept row goes in the padded layout (on ``device``).
    ``counts_t``: ``counts`` already on ``device``, if the caller has it."""
    padded = [-(-n // align) * align for n in counts]
    if counts_t is None:
        counts_t = device_ints(counts, device)
    padded_t = device_ints(padded, device)
    shift = (padded_t.cumsum(0) - padded_t) - (counts_t.cumsum(0) - counts_t)
    kept = sum(counts)
    where = torch.arange(kept, device=device) + torch.repeat_interleave(shift, counts_t, output_size=kept)
    return padded, where


def grouped_mm_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      counts: List[int]) -> torch.Tensor:
    """The ``grouped_mm`` kernel (autograd is torch's own)."""
    kept = sum(counts)
    if kept == 0:  # nothing to compute; keep the parameters in the graph (zero gradient)
        return x.new_zeros(x.shape[0], weight.shape[2]) + 0 * (weight.sum() + bias.sum())
    rows = x[:kept]
    groups = counts
    # Training: the weight gradient contracts over each group's tokens, which
    # CUDA's kernel reads with 16-byte aligned loads: groups of 8 rows in bf16
    # (torchtitan pads alike). Unaligned groups give silently wrong gradients.
    align = rows_per_16_bytes(x.dtype)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    padded = needs_grad and any(n % align for n in counts)
    counts_t = device_ints(counts, x.device)  # once: padding and the bias rows both need it
    if padded:
        groups, where = padded_rows(counts, align, x.device, counts_t)
        rows = x.new_zeros(sum(groups), x.shape[1]).index_copy(0, where, rows)
    offsets = device_ints(groups, x.device).cumsum(0).to(torch.int32)
    y = _grouped_mm(rows, weight, offs=offsets)
    if y.requires_grad:
        y = _DenseGrad.apply(y)
    if padded:
        y = y.index_select(0, where)
    # grouped_mm takes no per-group bias yet: add each row's expert bias.
    y = y + torch.repeat_interleave(bias, counts_t, dim=0, output_size=kept)
    if kept < x.shape[0]:
        y = torch.cat([y, y.new_zeros(x.shape[0] - kept, y.shape[1])])
    return y


def _aligned(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """grouped_mm needs 16-byte aligned rows in both operands."""
    unit = rows_per_16_bytes(x.dtype)
    return x.shape[1] % unit == 0 and weight.shape[2] % unit == 0


def grouped_mm_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's grouped GEMM runs here, forward and backward, for this
    dtype: a probe call, cached (which devices and dtypes it supports changes
    between torch releases; recent CPU builds have a reference loop)."""
    if _grouped_mm is None:
        return False
    key = (str(device), dtype)
    if key not in _PROBED:
        try:
            # The first call may come from generation (no_grad, inference mode).
            with torch.inference_mode(False), torch.enable_grad():
                _probe(device, dtype)
            _PROBED[key] = True
        except (RuntimeError, NotImplementedError):
            _PROBED[key] = False
    return _PROBED[key]


def _probe(device: torch.device, dtype: torch.dtype) -> None:
    a = torch.zeros(16, 16, device=device, dtype=dtype, requires_grad=True)
    b = torch.zeros(2, 16, 16, device=device, dtype=dtype, requires_grad=True)
    offs = torch.tensor([8, 16], device=device, dtype=torch.int32)
    out = _grouped_mm(a, b, offs=offs)
    # A dense upstream gradient: grouped_mm's backward rejects the stride-0 one
    # that .sum().backward() would give (see _DenseGrad).
    out.backward(torch.ones_like(out))


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous: torch's
    grouped_mm backward fails on expanded (stride-0) gradients, e.g. from a
    ``.sum()`` right after the layer."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad.contiguous()


def has_fast_grouped_mm(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's grouped GEMM has its fused kernel here: bfloat16 on
    SM90/SM100 (Hopper, Blackwell). Elsewhere torch runs a fallback that copies
    the group offsets to the host (a sync) and loops over groups: slower than
    ``loop``, so ``auto`` does not pick it."""
    return (device.type == 'cuda' and dtype == torch.bfloat16
            and torch.cuda.get_device_capability(device)[0] in (9, 10))


def choose_backend(requested: str, x: torch.Tensor, weight: torch.Tensor) -> str:
    """``auto`` -> ``grouped_mm`` where its fused kernel runs and the sizes are
    aligned, else ``loop``; a forced ``grouped_mm`` that cannot run is an option error."""
    if requested == 'loop':
        return 'loop'
    if requested == 'auto':
        fast = has_fast_grouped_mm(x.device, x.dtype) and _aligned(x, weight)
        return 'grouped_mm' if fast and grouped_mm_available(x.device, x.dtype) else 'loop'
    runs = grouped_mm_available(x.device, x.dtype)
    if not runs or not _aligned(x, weight):
        from parlai_hash.errors import OptionError

        why = (f"torch's grouped GEMM does not run for {str(x.dtype).replace('torch.', '')} "
               f"on {x.device.type}" if not runs else
               f"it needs widths that are multiples of {rows_per_16_bytes(x.dtype)} "
               f"(16 bytes); this layer has {x.shape[1]} -> {weight.shape[2]}")
        raise OptionError('--expert-gemm', f"grouped_mm cannot be used here: {why}",
                          "use --expert-gemm auto or loop")
    return 'grouped_mm'

def grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   counts: List[int], backend: str = 'auto') -> torch.Tensor:
    """Apply expert ``e``'s ``[a, b]`` weight and bias to its contiguous run of rows."""
    if choose_backend(backend, x, weight) == 'grouped_mm':
        return grouped_mm_linear(x, weight, bias, counts)
    return loop_linear(x, weight, bias, counts)
