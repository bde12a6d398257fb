"""Triton kernels of the fused factorized readout.

With P = H*W, x (B,C,P), m = spatial (N,P), w = features (N,C), gy = dL/dy (B,N):

    y[b,n]  = sum_c w[n,c] * (sum_p x[b,c,p] m[n,p]) + bias[n]                      (B,N)
    gx[b,c,p] = sum_n (gy[b,n] w[n,c]) m[n,p]                                       (B,C,P)
    gm[n,p] = sum_b gy[b,n] * (sum_c w[n,c] x[b,c,p])                               (N,P)
    gw[n,c] = sum_b gy[b,n] * (sum_p m[n,p] x[b,c,p])                               (N,C)
    gb[n]   = sum_b gy[b,n]                                                          (N,)

Each kernel is a blocked GEMM on ``tl.dot`` with a float32 accumulator. Forward, grad spatial and grad features
can keep the per-neuron factor (w[n,c] or gy[b,n]) outside the dot: each ``tl.dot`` contracts raw input tiles and
its float32 result is scaled row- or column-wise before it is added, so no rounded products enter the dot and
fp16/bf16 inputs are multiplied exactly. For float32 inputs a tile may instead be ``FUSED``: the factor is folded
into one operand (the factorized operand m[n,p] w[n,c], or gy[b,n] w[n,c], gy[b,n] m[n,p], rounded once to float32)
and the dot accumulates straight into the accumulator, one tensor-core contraction over (c,p) or (b,c) or (b,p).
Grad x always contracts the float32 product gy[b,n] w[n,c] (for fp16/bf16 in 3xTF32, close to float32).

The float32 dots run in the ``precision`` the caller gives (see ``daenr_fast.ops.factorized_readout``):
"tf32x3" (split precision on tensor cores: each operand is a TF32 high part plus a TF32 low part and three
products are summed, about float32 accuracy), "ieee" (FMA units, exact float32 products) or "tf32" (one TF32
product, 10-bit mantissas; an opt-in). The Triton interpreter ignores ``input_precision`` (it multiplies in
float32 with numpy), so on CPU tensors every precision gives float32 products.

Tiles: small calls use fixed heuristic blocks per dtype (no benchmarking); on a GPU, calls of at least
``TUNE_MIN_WORK`` multiply-adds are autotuned once per shape and precision over :data:`TILE_CONFIGS`
(``DAENR_FAST_TRITON_AUTOTUNE=0`` turns it off). The interpreter always runs one configuration: the heuristic,
or the ``tiles`` a caller passes.

When the output tiles alone are too few to fill the GPU, the forward splits its channels and the two weight
gradients split the batch across programs (split-K); each split writes a float32 partial result and the launcher
sums them in a fixed order (deterministic). The (B,C,N) and (B,N,P) intermediates never exist.

Works on CUDA tensors and, under ``TRITON_INTERPRET=1``, on CPU tensors.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from daenr_fast.ops.factorized_readout import DEFAULT_FLOAT32_PRECISION, FLOAT32_PRECISIONS

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_AUTOTUNE = os.environ.get("DAENR_FAST_TRITON_AUTOTUNE", "1") != "0"
_MAX_SPLITS = 64

#: Calls of at least this many multiply-adds (B*C*H*W*N) are autotuned on a GPU; smaller ones are launch-bound.
TUNE_MIN_WORK = 1e8


# ------------------------------------------------------------------------------------------------------- kernels

@triton.jit(do_not_specialize=["c_per_split"])
def _forward_kernel(x_ptr, m_ptr, w_ptr, part_ptr, B, C, P, N, c_per_split,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, FUSED: tl.constexpr,
                    PRECISION: tl.constexpr):
    """part[s, b, n] = sum_{c in split s} w[n,c] * sum_p x[b,c,p] m[n,p] for one (BLOCK_B x BLOCK_N) tile
    (FUSED: sum_{c,p} x[b,c,p] (m[n,p] w[n,c]), one accumulating dot per channel)."""
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_b = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask_b = offs_b < B
    mask_n = offs_n < N
    c_lo = pid_s * c_per_split
    c_hi = tl.minimum(C, c_lo + c_per_split)
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        m_tile = tl.load(m_ptr + offs_n[:, None] * P + offs_p[None, :],
                         mask=mask_n[:, None] & mask_p[None, :], other=0.0)          # (BLOCK_N, BLOCK_P)
        m_t = tl.trans(m_tile)                                                       # (BLOCK_P, BLOCK_N)
        for c in range(c_lo, c_hi):
            x_tile = tl.load(x_ptr + (offs_b[:, None] * C + c) * P + offs_p[None, :],
                             mask=mask_b[:, None] & mask_p[None, :], other=0.0)      # (BLOCK_B, BLOCK_P)
            w_c = tl.load(w_ptr + offs_n * C + c, mask=mask_n, other=0.0).to(tl.float32)
            if FUSED:
                acc = tl.dot(x_tile, m_t * w_c[None, :], acc, input_precision=PRECISION)
            else:
                acc += tl.dot(x_tile, m_t, input_precision=PRECISION) * w_c[None, :]
    out = part_ptr + pid_s.to(tl.int64) * B * N + offs_b[:, None] * N + offs_n[None, :]
    tl.store(out, acc, mask=mask_b[:, None] & mask_n[None, :])


@triton.jit
def _grad_x_kernel(gy_ptr, m_ptr, w_ptr, gx_ptr, B, C, P, N,
                   BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """gx[(b,c), p] = sum_n (gy[b,n] w[n,c]) m[n,p] for one tile of BLOCK_R rows (b,c) by BLOCK_P pixels."""
    pid_r = tl.program_id(0)
    pid_p = tl.program_id(1)
    rows = (pid_r * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    offs_p = (pid_p * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    mask_r = rows < B * C
    mask_p = offs_p < P
    row_b = rows // C
    row_c = rows - row_b * C
    acc = tl.zeros((BLOCK_R, BLOCK_P), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        mask_n = offs_n < N
        mask_rn = mask_r[:, None] & mask_n[None, :]
        gy = tl.load(gy_ptr + row_b[:, None] * N + offs_n[None, :], mask=mask_rn, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs_n[None, :] * C + row_c[:, None], mask=mask_rn, other=0.0).to(tl.float32)
        m_tile = tl.load(m_ptr + offs_n[:, None] * P + offs_p[None, :],
                         mask=mask_n[:, None] & mask_p[None, :], other=0.0).to(tl.float32)
        acc += tl.dot(gy * w, m_tile, input_precision=PRECISION)
    out = gx_ptr + rows[:, None] * P + offs_p[None, :]
    tl.store(out, acc.to(gx_ptr.dtype.element_ty), mask=mask_r[:, None] & mask_p[None, :])


@triton.jit(do_not_specialize=["b_per_split"])
def _grad_spatial_kernel(gy_ptr, x_ptr, w_ptr, part_ptr, B, C, P, N, b_per_split,
                         BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                         FUSED: tl.constexpr, PRECISION: tl.constexpr):
    """part[s, n, p] = sum_{b in split s} gy[b,n] * sum_c w[n,c] x[b,c,p] for one (BLOCK_N x BLOCK_P) tile
    (FUSED: sum_{b,c} (gy[b,n] w[n,c]) x[b,c,p])."""
    pid_n = tl.program_id(0)
    pid_p = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_p = (pid_p * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    mask_n = offs_n < N
    mask_p = offs_p < P
    b_lo = pid_s * b_per_split
    b_hi = tl.minimum(B, b_lo + b_per_split)
    acc = tl.zeros((BLOCK_N, BLOCK_P), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        mask_c = offs_c < C
        w_tile = tl.load(w_ptr + offs_n[:, None] * C + offs_c[None, :],
                         mask=mask_n[:, None] & mask_c[None, :], other=0.0)          # (BLOCK_N, BLOCK_C)
        for b in range(b_lo, b_hi):
            x_tile = tl.load(x_ptr + (b * C + offs_c[:, None]) * P + offs_p[None, :],
                             mask=mask_c[:, None] & mask_p[None, :], other=0.0)      # (BLOCK_C, BLOCK_P)
            g_b = tl.load(gy_ptr + b * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            if FUSED:
                acc = tl.dot(w_tile * g_b[:, None], x_tile, acc, input_precision=PRECISION)
            else:
                acc += tl.dot(w_tile, x_tile, input_precision=PRECISION) * g_b[:, None]
    out = part_ptr + pid_s.to(tl.int64) * N * P + offs_n[:, None] * P + offs_p[None, :]
    tl.store(out, acc, mask=mask_n[:, None] & mask_p[None, :])


@triton.jit(do_not_specialize=["b_per_split"])
def _grad_features_kernel(gy_ptr, x_ptr, m_ptr, part_ptr, B, C, P, N, b_per_split,
                          BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                          FUSED: tl.constexpr, PRECISION: tl.constexpr):
    """part[s, n, c] = sum_{b in split s} gy[b,n] * sum_p m[n,p] x[b,c,p] for one (BLOCK_N x BLOCK_C) tile
    (FUSED: sum_{b,p} (gy[b,n] m[n,p]) x[b,c,p])."""
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_c = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    mask_n = offs_n < N
    mask_c = offs_c < C
    b_lo = pid_s * b_per_split
    b_hi = tl.minimum(B, b_lo + b_per_split)
    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        m_tile = tl.load(m_ptr + offs_n[:, None] * P + offs_p[None, :],
                         mask=mask_n[:, None] & mask_p[None, :], other=0.0)          # (BLOCK_N, BLOCK_P)
        for b in range(b_lo, b_hi):
            x_tile = tl.load(x_ptr + (b * C + offs_c[None, :]) * P + offs_p[:, None],
                             mask=mask_p[:, None] & mask_c[None, :], other=0.0)      # (BLOCK_P, BLOCK_C)
            g_b = tl.load(gy_ptr + b * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            if FUSED:
                acc = tl.dot(m_tile * g_b[:, None], x_tile, acc, input_precision=PRECISION)
            else:
                acc += tl.dot(m_tile, x_tile, input_precision=PRECISION) * g_b[:, None]
    out = part_ptr + pid_s.to(tl.int64) * N * C + offs_n[:, None] * C + offs_c[None, :]
    tl.store(out, acc, mask=mask_n[:, None] & mask_c[None, :])


# ------------------------------------------------------------------------------------------------------- tiles

#: kernel -> tile class -> candidate tiles of the autotuner (block sizes, FUSED, num_warps, num_stages). Classes:
#: ``fma`` float32 tiles in "ieee" (FMA units), ``mma`` float32 tiles on tensor cores ("tf32x3", "tf32"; also
#: grad x of fp16/bf16, which contracts float32 products in 3xTF32), ``half`` fp16/bf16 tiles (FUSED stays 0 so that
#: their products stay exact). Every candidate is run by the interpreter tests (tests/ops/).
TILE_CONFIGS: dict[str, dict[str, list[dict]]] = {
    "forward": {
        "fma": [dict(BLOCK_B=64, BLOCK_N=128, BLOCK_P=32, FUSED=0, num_warps=8, num_stages=3),
                dict(BLOCK_B=64, BLOCK_N=64, BLOCK_P=32, FUSED=1, num_warps=4, num_stages=3),
                dict(BLOCK_B=32, BLOCK_N=128, BLOCK_P=16, FUSED=1, num_warps=4, num_stages=3)],
        "mma": [dict(BLOCK_B=64, BLOCK_N=128, BLOCK_P=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_B=64, BLOCK_N=128, BLOCK_P=32, FUSED=0, num_warps=8, num_stages=3),
                dict(BLOCK_B=128, BLOCK_N=128, BLOCK_P=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_B=64, BLOCK_N=64, BLOCK_P=64, FUSED=1, num_warps=4, num_stages=3),
                dict(BLOCK_B=32, BLOCK_N=128, BLOCK_P=64, FUSED=1, num_warps=4, num_stages=4),
                dict(BLOCK_B=64, BLOCK_N=256, BLOCK_P=32, FUSED=1, num_warps=8, num_stages=3)],
        "half": [dict(BLOCK_B=64, BLOCK_N=128, BLOCK_P=64, FUSED=0, num_warps=8, num_stages=3),
                 dict(BLOCK_B=64, BLOCK_N=64, BLOCK_P=64, FUSED=0, num_warps=4, num_stages=3),
                 dict(BLOCK_B=128, BLOCK_N=128, BLOCK_P=64, FUSED=0, num_warps=8, num_stages=3),
                 dict(BLOCK_B=32, BLOCK_N=128, BLOCK_P=128, FUSED=0, num_warps=4, num_stages=3)],
    },
    "grad_x": {
        "fma": [dict(BLOCK_R=64, BLOCK_P=64, BLOCK_N=32, num_warps=4, num_stages=3),
                dict(BLOCK_R=32, BLOCK_P=64, BLOCK_N=32, num_warps=4, num_stages=3),
                dict(BLOCK_R=64, BLOCK_P=128, BLOCK_N=16, num_warps=8, num_stages=3)],
        "mma": [dict(BLOCK_R=64, BLOCK_P=64, BLOCK_N=32, num_warps=4, num_stages=3),
                dict(BLOCK_R=128, BLOCK_P=64, BLOCK_N=32, num_warps=8, num_stages=3),
                dict(BLOCK_R=64, BLOCK_P=128, BLOCK_N=32, num_warps=8, num_stages=3),
                dict(BLOCK_R=128, BLOCK_P=128, BLOCK_N=32, num_warps=8, num_stages=3),
                dict(BLOCK_R=64, BLOCK_P=64, BLOCK_N=64, num_warps=4, num_stages=3)],
    },
    "grad_spatial": {
        "fma": [dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=32, FUSED=0, num_warps=8, num_stages=3),
                dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_N=32, BLOCK_P=64, BLOCK_C=16, FUSED=1, num_warps=4, num_stages=3)],
        "mma": [dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=32, FUSED=1, num_warps=4, num_stages=3),
                dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=32, FUSED=0, num_warps=4, num_stages=3),
                dict(BLOCK_N=128, BLOCK_P=64, BLOCK_C=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_N=64, BLOCK_P=128, BLOCK_C=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_N=128, BLOCK_P=128, BLOCK_C=16, FUSED=1, num_warps=8, num_stages=3)],
        "half": [dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=64, FUSED=0, num_warps=4, num_stages=3),
                 dict(BLOCK_N=128, BLOCK_P=64, BLOCK_C=64, FUSED=0, num_warps=8, num_stages=3),
                 dict(BLOCK_N=64, BLOCK_P=128, BLOCK_C=32, FUSED=0, num_warps=8, num_stages=3)],
    },
    "grad_features": {
        "fma": [dict(BLOCK_N=64, BLOCK_C=64, BLOCK_P=32, FUSED=0, num_warps=4, num_stages=3),
                dict(BLOCK_N=64, BLOCK_C=64, BLOCK_P=32, FUSED=1, num_warps=4, num_stages=3),
                dict(BLOCK_N=32, BLOCK_C=64, BLOCK_P=16, FUSED=1, num_warps=4, num_stages=3)],
        "mma": [dict(BLOCK_N=64, BLOCK_C=64, BLOCK_P=32, FUSED=1, num_warps=4, num_stages=3),
                dict(BLOCK_N=64, BLOCK_C=64, BLOCK_P=32, FUSED=0, num_warps=4, num_stages=3),
                dict(BLOCK_N=128, BLOCK_C=64, BLOCK_P=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_N=64, BLOCK_C=64, BLOCK_P=64, FUSED=1, num_warps=4, num_stages=4),
                dict(BLOCK_N=128, BLOCK_C=32, BLOCK_P=64, FUSED=1, num_warps=8, num_stages=3)],
        "half": [dict(BLOCK_N=64, BLOCK_C=64, BLOCK_P=64, FUSED=0, num_warps=4, num_stages=3),
                 dict(BLOCK_N=128, BLOCK_C=64, BLOCK_P=64, FUSED=0, num_warps=8, num_stages=3),
                 dict(BLOCK_N=64, BLOCK_C=32, BLOCK_P=128, FUSED=0, num_warps=4, num_stages=3)],
    },
}

#: kernel -> block name -> the extent (from the kernel's B, C, P, N) that block covers.
_EXTENTS = {
    "forward": {"BLOCK_B": lambda a: a["B"], "BLOCK_N": lambda a: a["N"], "BLOCK_P": lambda a: a["P"]},
    "grad_x": {"BLOCK_R": lambda a: a["B"] * a["C"], "BLOCK_P": lambda a: a["P"], "BLOCK_N": lambda a: a["N"]},
    "grad_spatial": {"BLOCK_N": lambda a: a["N"], "BLOCK_P": lambda a: a["P"], "BLOCK_C": lambda a: a["C"]},
    "grad_features": {"BLOCK_N": lambda a: a["N"], "BLOCK_C": lambda a: a["C"], "BLOCK_P": lambda a: a["P"]},
}
_LAUNCH_KEYS = ("num_warps", "num_stages")
_KERNELS = {"forward": _forward_kernel, "grad_x": _grad_x_kernel, "grad_spatial": _grad_spatial_kernel,
            "grad_features": _grad_features_kernel}


def tile_class(kernel: str, dtype: torch.dtype, precision: str) -> str:
    """The :data:`TILE_CONFIGS` class of ``kernel`` on ``dtype`` inputs in ``precision``."""
    if kernel == "grad_x" and dtype != torch.float32:
        return "mma"
    if dtype != torch.float32:
        return "half"
    return "fma" if precision == "ieee" else "mma"


def _fits(kernel: str, tiles: dict, args: dict) -> bool:
    """Whether no block of ``tiles`` is more than the power of two covering its extent (at least 16)."""
    return all(tiles[name] <= max(16, triton.next_power_of_2(max(extent(args), 1)))
               for name, extent in _EXTENTS[kernel].items())


def _pruner(kernel: str):
    def prune(configs, named_args, **kwargs):
        kept = [cfg for cfg in configs if _fits(kernel, cfg.kwargs, named_args)]
        return kept or [min(configs, key=lambda cfg: sum(cfg.kwargs[b] for b in _EXTENTS[kernel]))]

    return prune


_tuned: dict[tuple[str, str], object] = {}
_best: dict[tuple, dict] = {}  # (kernel, dtype, precision, B, C, P, N) -> the tiles the autotuner chose


def _autotuner(kernel: str, cls: str):
    """``triton.autotune`` of ``kernel`` over the candidates of ``cls``, keyed on the exact shape and precision
    (results kept in Triton's cache where this Triton can, so that a shape is tuned once per machine)."""
    key = (kernel, cls)
    if key not in _tuned:
        import inspect

        import triton.testing

        configs = [triton.Config({k: v for k, v in cfg.items() if k not in _LAUNCH_KEYS},
                                 num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
                   for cfg in TILE_CONFIGS[kernel][cls]]
        accepted = inspect.signature(triton.autotune).parameters
        options = {"do_bench": lambda fn, quantiles: triton.testing.do_bench(fn, warmup=5, rep=20,
                                                                             quantiles=quantiles),
                   "cache_results": True}
        _tuned[key] = triton.autotune(configs=configs, key=["B", "C", "P", "N", "PRECISION"],
                                      prune_configs_by={"early_config_prune": _pruner(kernel)},
                                      **{k: v for k, v in options.items() if k in accepted})(_KERNELS[kernel])
    return _tuned[key]


def _check_tiles(kernel: str, tiles: dict, dtype: torch.dtype) -> None:
    wanted = set(_EXTENTS[kernel]) | ({"FUSED"} if kernel != "grad_x" else set())
    missing, unknown = wanted - set(tiles), set(tiles) - wanted - set(_LAUNCH_KEYS)
    if missing or unknown:
        raise ValueError(f"factorized_readout (triton): tiles of {kernel} need {sorted(wanted)} (and optionally "
                         f"{list(_LAUNCH_KEYS)}); missing {sorted(missing)}, unknown {sorted(unknown)}")
    for name in _EXTENTS[kernel]:
        size = tiles[name]
        if not isinstance(size, int) or size < 16 or size & (size - 1):
            raise ValueError(f"factorized_readout (triton): {kernel} {name} must be a power of two >= 16, got {size!r}")
    if tiles.get("FUSED", 0) and dtype != torch.float32:
        raise ValueError(f"factorized_readout (triton): FUSED tiles take float32 inputs (they round the products), "
                         f"got {dtype}")


def _launch(kernel: str, grid, args: tuple, shape: tuple, heuristic: dict, tiles: Optional[dict],
            dtype: torch.dtype, precision: str) -> None:
    """Run ``kernel`` on ``grid(meta)`` for a call of ``shape`` (B, C, P, N): with ``tiles`` when given, else on a
    GPU for calls of at least :data:`TUNE_MIN_WORK` multiply-adds with the tiles the autotuner chose for this
    shape (tuned at its first call; ``DAENR_FAST_TRITON_AUTOTUNE=0`` turns it off), else with ``heuristic``.
    A shape first seen while a CUDA graph is being captured runs the heuristic (no benchmarking in a capture)."""
    if tiles is not None:
        _check_tiles(kernel, tiles, dtype)
        meta = dict(tiles)
    elif _AUTOTUNE and not _INTERPRET and math.prod(shape) >= TUNE_MIN_WORK:
        key = (kernel, dtype, precision, *shape)
        meta = _best.get(key)
        if meta is None and torch.cuda.is_current_stream_capturing():
            meta = heuristic
        elif meta is None:
            tuner = _autotuner(kernel, tile_class(kernel, dtype, precision))
            tuner[grid](*args, PRECISION=precision)
            best = tuner.best_config
            _best[key] = {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}
            return
        meta = dict(meta)
    else:
        meta = dict(heuristic)
    launch = {k: meta.pop(k) for k in _LAUNCH_KEYS if k in meta}
    _KERNELS[kernel][grid(meta)](*args, **meta, PRECISION=precision, **({} if _INTERPRET else launch))


# ------------------------------------------------------------------------------------------------------- launchers

def _block(extent: int, lo: int, hi: int) -> int:
    """Power-of-two block size covering ``extent``, clamped to [lo, hi] (tl.dot needs at least 16)."""
    return max(lo, min(hi, triton.next_power_of_2(max(extent, 1))))


def _check_precision(precision: str) -> None:
    if precision not in FLOAT32_PRECISIONS:
        raise ValueError(f"factorized_readout (triton): precision must be one of {FLOAT32_PRECISIONS}, "
                         f"got {precision!r}")


def _tile_precision(dtype: torch.dtype, precision: str) -> str:
    """The dot precision of input tiles of ``dtype``: ``precision`` for float32; fp16/bf16 products are exact and
    their dots ignore it ("tf32" is passed)."""
    return precision if dtype == torch.float32 else "tf32"


def _split_count(tiles: int, depth: int, min_depth: int, device: torch.device, splits: Optional[int]) -> int:
    """How many programs share the reduction of each output tile.

    ``depth`` loop units (channels or batch rows) are cut into equal runs of at least ``min_depth`` units until
    the launch has about two programs per SM; ``splits`` overrides the choice (it is clamped to [1, depth]).
    """
    if depth <= 0:
        return 1
    if splits is None:
        if device.type != "cuda":
            return 1
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        splits = min(-(-2 * sms // max(tiles, 1)), max(depth // min_depth, 1), _MAX_SPLITS)
    return max(1, min(int(splits), depth))


def _split(depth: int, count: int) -> tuple[int, int]:
    """(units per split, number of non-empty splits) when ``depth`` units are cut into ``count`` runs."""
    per = max(1, -(-depth // count))
    return per, max(1, -(-depth // per))


def _check(*tensors: torch.Tensor) -> None:
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"factorized_readout (triton): dtype must be float32, float16 or bfloat16, got {dtype}")
    for t in tensors:
        if t.dtype != dtype or not t.is_contiguous():
            raise ValueError("factorized_readout (triton): inputs must be contiguous and share one dtype")


def forward(x: torch.Tensor, spatial: torch.Tensor, features: torch.Tensor, bias: Optional[torch.Tensor],
            *, precision: str = DEFAULT_FLOAT32_PRECISION, splits: Optional[int] = None,
            tiles: Optional[dict] = None) -> torch.Tensor:
    """y (B,N) = readout of x (B,C,H,W) by spatial (N,H,W) and features (N,C), plus bias (N,) or None.

    ``precision`` is the ``input_precision`` of the float32 dots (one of FLOAT32_PRECISIONS; fp16/bf16 tiles are
    multiplied exactly whatever it says). ``splits`` overrides how many programs share the channel sum of each
    output tile (None: chosen from the shape and the GPU; the result does not depend on it beyond float32
    rounding). ``tiles`` (one entry of :data:`TILE_CONFIGS` ``["forward"]``) fixes the blocks instead of the
    heuristic or the autotuner.
    """
    _check(x, spatial, features, *(() if bias is None else (bias,)))
    _check_precision(precision)
    b, c, h, w = x.shape
    n, p = spatial.shape[0], h * w
    if b * n == 0:
        return x.new_zeros((b, n))
    # float32 dots on FMA units ("ieee"): a shallower pixel block keeps their operands in registers
    block_b, block_n = _block(b, 16, 64), _block(n, 16, 128)
    heuristic = dict(BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_P=_block(p, 16, 32 if x.dtype == torch.float32 else 64),
                     FUSED=0, num_warps=8 if block_b * block_n >= 64 * 128 else 4, num_stages=3)
    tiles_out = triton.cdiv(b, block_b) * triton.cdiv(n, block_n)
    c_per, count = _split(c, _split_count(tiles_out, c, 2, x.device, splits))
    part = torch.empty((count, b, n), device=x.device, dtype=torch.float32)
    _launch("forward", lambda meta: (triton.cdiv(b, meta["BLOCK_B"]), triton.cdiv(n, meta["BLOCK_N"]), count),
            (x, spatial, features, part, b, c, p, n, c_per), (b, c, p, n), heuristic, tiles, x.dtype,
            _tile_precision(x.dtype, precision))
    y = part[0] if count == 1 else part.sum(0)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype)


def backward(grad: torch.Tensor, x: torch.Tensor, spatial: torch.Tensor, features: torch.Tensor,
             *, precision: str = DEFAULT_FLOAT32_PRECISION, splits: Optional[int] = None,
             tiles: Optional[dict] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (gx (B,C,H,W), gspatial (N,H,W), gfeatures (N,C), gbias (N,)) given grad = dL/dy (B,N).

    ``precision`` as in :func:`forward` (grad x of fp16/bf16 inputs contracts float32 products in "tf32x3"
    whatever it says); ``splits`` overrides how many programs share the batch sum of each tile of gspatial and
    gfeatures; ``tiles`` maps kernel names ("grad_x", "grad_spatial", "grad_features") to an entry of
    :data:`TILE_CONFIGS` of that kernel (the others keep the heuristic or the autotuner).
    """
    _check(grad, x, spatial, features)
    _check_precision(precision)
    tiles = dict(tiles or {})
    unknown = set(tiles) - {"grad_x", "grad_spatial", "grad_features"}
    if unknown:
        raise ValueError(f"factorized_readout (triton): tiles name the kernels grad_x, grad_spatial and "
                         f"grad_features, got {sorted(unknown)}")
    b, c, h, w = x.shape
    n, p = spatial.shape[0], h * w
    dtype = x.dtype
    gx = torch.empty_like(x)
    if gx.numel():
        heuristic = dict(BLOCK_R=_block(b * c, 16, 64), BLOCK_P=_block(p, 16, 64), BLOCK_N=_block(n, 16, 32),
                         num_warps=4, num_stages=3)
        _launch("grad_x", lambda meta: (triton.cdiv(b * c, meta["BLOCK_R"]), triton.cdiv(p, meta["BLOCK_P"])),
                (grad, spatial, features, gx, b, c, p, n), (b, c, p, n), heuristic, tiles.get("grad_x"), dtype,
                precision if dtype == torch.float32 else "tf32x3")

    gm = torch.zeros((n, p), device=x.device, dtype=torch.float32)
    if gm.numel():
        block_n, block_p = _block(n, 16, 64), _block(p, 16, 64)
        heuristic = dict(BLOCK_N=block_n, BLOCK_P=block_p, BLOCK_C=_block(c, 16, 32 if dtype == torch.float32 else 64),
                         FUSED=0, num_warps=8 if dtype == torch.float32 else 4, num_stages=3)
        b_per, count = _split(b, _split_count(triton.cdiv(n, block_n) * triton.cdiv(p, block_p), b, 2, x.device,
                                              splits))
        part = torch.empty((count, n, p), device=x.device, dtype=torch.float32)
        _launch("grad_spatial",
                lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(p, meta["BLOCK_P"]), count),
                (grad, x, features, part, b, c, p, n, b_per), (b, c, p, n), heuristic, tiles.get("grad_spatial"),
                dtype, _tile_precision(dtype, precision))
        gm = part[0] if count == 1 else part.sum(0)

    gw = torch.zeros((n, c), device=x.device, dtype=torch.float32)
    if gw.numel():
        block_n, block_c = _block(n, 16, 64), _block(c, 16, 64)
        heuristic = dict(BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_P=_block(p, 16, 32 if dtype == torch.float32 else 64),
                         FUSED=0, num_warps=4, num_stages=3)
        b_per, count = _split(b, _split_count(triton.cdiv(n, block_n) * triton.cdiv(c, block_c), b, 1, x.device,
                                              splits))
        part = torch.empty((count, n, c), device=x.device, dtype=torch.float32)
        _launch("grad_features",
                lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(c, meta["BLOCK_C"]), count),
                (grad, x, spatial, part, b, c, p, n, b_per), (b, c, p, n), heuristic, tiles.get("grad_features"),
                dtype, _tile_precision(dtype, precision))
        gw = part[0] if count == 1 else part.sum(0)

    gb = grad.to(torch.float32).sum(0)
    return gx, gm.view(n, h, w).to(dtype), gw.to(dtype), gb.to(dtype)
