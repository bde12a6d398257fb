"""Triton kernel of the fused Poisson loss (see :mod:`daenr_fast.ops.poisson_loss` for the math).

One program handles a (BLOCK_R, BLOCK_N) tile of the (R, N) view: it evaluates the loss and dl/dz in float32,
writes the scaled gradient (float32, whatever the input dtype), and reduces its tile (a scalar partial, or one
partial per column for the per-neuron mode) together with the count and first flat index of invalid targets. The
launcher sums the partials in float64 in a fixed order. The activation and mode arrive as the integer codes of
:mod:`daenr_fast.ops.poisson_codes`, compile-time constants of the kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from daenr_fast.ops.poisson_codes import PoissonActivation, PoissonMode

# The codes as constexpr globals, compared with the kernel's constexpr ACT and MODE arguments.
_IDENTITY = tl.constexpr(int(PoissonActivation.IDENTITY))
_ELU1 = tl.constexpr(int(PoissonActivation.ELU1))
_EXP = tl.constexpr(int(PoissonActivation.EXP))
_MODE_NONE = tl.constexpr(int(PoissonMode.NONE))
_MODE_TOTAL = tl.constexpr(int(PoissonMode.TOTAL))

_NO_INDEX = 2**63 - 1
_NO_INDEX_C = tl.constexpr(_NO_INDEX)


@triton.jit
def _log1p(u):
    w = 1.0 + u
    d = w - 1.0
    return tl.where(d == 0.0, u, tl.log(w) * (u / tl.where(d == 0.0, 1.0, d)))


@triton.jit
def _poisson_tile_kernel(z_ptr, s_ptr, loss_ptr, grad_ptr, part_ptr, count_ptr, first_ptr, R, N, eps, gscale,
                         ACT: tl.constexpr, MODE: tl.constexpr, FULL: tl.constexpr, NEED_GRAD: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < R) & (cols[None, :] < N)
    offs = rows[:, None].to(tl.int64) * N + cols[None, :]
    z = tl.load(z_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    s = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if ACT == _EXP:  # z is the log-rate
        ez = tl.exp(z)
        loss = ez - s * z
        grad = ez - s
    else:
        if ACT == _IDENTITY:
            r = z
            dr = tl.full(z.shape, 1.0, tl.float32)
        elif ACT == _ELU1:
            ez = tl.exp(tl.minimum(z, 0.0))
            r = tl.where(z > 0.0, z + 1.0, ez)
            dr = tl.where(z > 0.0, 1.0, ez)
        else:  # softplus
            u = tl.exp(-tl.abs(z))
            inv = 1.0 / (1.0 + u)
            r = tl.where(z > 20.0, z, tl.maximum(z, 0.0) + _log1p(u))
            dr = tl.where(z > 20.0, 1.0, tl.where(z >= 0.0, inv, u * inv))
        re = r + eps
        loss = r - s * tl.log(re)
        grad = dr * (1.0 - s / re)
    if FULL:
        safe = tl.maximum(s, 1.0)
        stirling = safe * tl.log(safe) - safe + 0.5 * tl.log(6.283185307179586 * safe)
        loss += tl.where(s > 1.0, stirling, 0.0)
    if NEED_GRAD:
        tl.store(grad_ptr + offs, grad * gscale, mask=mask)
    loss = tl.where(mask, loss, 0.0)
    if MODE == _MODE_NONE:
        tl.store(loss_ptr + offs, loss.to(loss_ptr.dtype.element_ty), mask=mask)
    elif MODE == _MODE_TOTAL:
        tl.store(part_ptr + pid_r * tl.num_programs(1) + pid_n, tl.sum(tl.sum(loss, axis=1), axis=0))
    else:  # per neuron
        tl.store(part_ptr + pid_r.to(tl.int64) * N + cols, tl.sum(loss, axis=0), mask=cols < N)
    invalid = (~((s >= 0.0) & (s <= 3.4028234663852886e38))) & mask
    slot = pid_r * tl.num_programs(1) + pid_n
    tl.store(count_ptr + slot, tl.sum(tl.sum(invalid.to(tl.int64), axis=1), axis=0))
    first = tl.where(invalid, offs, _NO_INDEX_C)
    tl.store(first_ptr + slot, tl.min(tl.min(first, axis=1), axis=0))


def forward(z: torch.Tensor, target: torch.Tensor, activation: int, eps: float, mode: int, mean: bool,
            full: bool, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, scaled dl/dz or an empty tensor, int64 [invalid count, first invalid flat index or -1]).

    ``activation`` is a :class:`PoissonActivation` code, ``mode`` a :class:`PoissonMode` code.
    """
    numel = z.numel()
    per_neuron = mode == PoissonMode.PER_NEURON
    if per_neuron:
        n = z.shape[-1]
        r = numel // n if n else 0
        block_r, block_n = 16, 64
    else:
        r, n = 1, numel
        block_r, block_n = 1, 1024
    count = numel if mode == PoissonMode.TOTAL else r
    scale = (1.0 / count if count else float("nan")) if (mean and mode != PoissonMode.NONE) else 1.0
    if mode == PoissonMode.NONE:
        loss = torch.empty_like(z)
    else:
        loss = z.new_empty(() if mode == PoissonMode.TOTAL else (n,))
    grad = torch.empty_like(z, dtype=torch.float32) if need_grad else z.new_empty((0,), dtype=torch.float32)
    grid = (triton.cdiv(r, block_r), triton.cdiv(n, block_n))
    slots = grid[0] * grid[1]
    part = torch.zeros((grid[0], n) if per_neuron else (slots,), device=z.device, dtype=torch.float32)
    counts = torch.zeros(slots, device=z.device, dtype=torch.int64)
    firsts = torch.full((slots,), _NO_INDEX, device=z.device, dtype=torch.int64)
    if slots:
        _poisson_tile_kernel[grid](z, target, loss, grad, part, counts, firsts, r, n, eps, scale,
                                   ACT=int(activation), MODE=int(mode), FULL=full, NEED_GRAD=need_grad,
                                   BLOCK_R=block_r, BLOCK_N=block_n)
    if mode == PoissonMode.TOTAL:
        loss.copy_(part.double().sum() * scale)
    elif per_neuron:
        loss.copy_(part.double().sum(0) * scale)
    first = firsts.min() if slots else torch.tensor(_NO_INDEX, device=z.device)
    first = torch.where(first == _NO_INDEX, torch.tensor(-1, device=z.device), first)
    return loss, grad, torch.stack([counts.sum(), first])
