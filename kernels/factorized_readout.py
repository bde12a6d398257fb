"""Triton kernels of the fused factorized readout.

With P = H*W, x (B,C,P), m = spatial (N,P), w = features (N,C), gy = dL/dy (B,N):

    y[b,n]  = sum_c w[n,c] * (sum_p x[b,c,p] m[n,p]) + bias[n]                      (B,N)
    gx[b,c,p] = sum_n (gy[b,n] w[n,c]) m[n,p]                                       (B,C,P)
    gm[n,p] = sum_b gy[b,n] * (sum_c w[n,c] x[b,c,p])                               (N,P)
    gw[n,c] = sum_b gy[b,n] * (sum_p m[n,p] x[b,c,p])                               (N,C)
    gb[n]   = sum_b gy[b,n]                                                          (N,)

Each kernel is a blocked GEMM on ``tl.dot`` with a float32 accumulator. Forward and grad features share one GEMM:
with x seen as a (B*C, P) matrix, pooled[(b,c), n] = sum_p x[(b,c), p] m[n, p] on raw input tiles, whose rows
are BLOCK_B batch entries times BLOCK_C channels; the epilogue scales it by w[n,c] and sums over the tile's
channels (forward), or by gy[b,n] and sums over its batch entries (grad features). Each program makes one such
tile, so a chunk of channels (forward) or of the batch (grad features) is one partial result, summed by the
launcher in a fixed order (deterministic); pooled itself, (B,C,N), never exists in memory. Products of fp16/bf16
inputs are exact inside the dot and the scaling is in float32. Grad x contracts the float32 product
gy[b,n] w[n,c] with m (for fp16/bf16 in 3xTF32, close to float32); grad spatial contracts w with x per batch row
and scales by gy, or, in ``FUSED`` float32 tiles, contracts the product gy[b,n] w[n,c] (rounded once to float32).

The float32 dots run in the ``precision`` the caller gives (see ``daenr_fast.ops.factorized_readout``):
"tf32x3" (split precision on tensor cores: each operand is a TF32 high part plus a TF32 low part and three
products are summed, about float32 accuracy), "ieee" (FMA units, exact float32 products) or "tf32" (one TF32
product, 10-bit mantissas; an opt-in). The Triton interpreter ignores ``input_precision`` (it multiplies in
float32 with numpy), so on CPU tensors every precision gives float32 products.

Tiles: small calls use fixed heuristic blocks per dtype (no benchmarking); on a GPU, calls of at least
``TUNE_MIN_WORK`` multiply-adds are autotuned once per shape and precision over :data:`TILE_CONFIGS`
(``DAENR_FAST_TRITON_AUTOTUNE=0`` turns it off). The interpreter always runs one configuration: the heuristic,
or the ``tiles`` a caller passes.

Grad spatial, when its output tiles alone are too few to fill the GPU, splits the batch across programs
(split-K) with float32 partial results, summed in a fixed order. :func:`compile_ahead` and :func:`ptx_resources`
compile any kernel and tile for sm_80/sm_90 without a GPU and report its registers, spills, shared memory and
tensor-core instructions (tests/ops/test_factorized_readout_compile.py).

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

@triton.jit
def _pooled(x_ptr, m_ptr, rows, mask_r, offs_n, mask_n, P, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """pooled[r, n] = sum_p x[rows[r], p] m[n, p] (BLOCK_R x BLOCK_N, float32) with x seen as (B*C, P): one GEMM
    main loop over the pixels, on raw input tiles."""
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = x_ptr + rows[:, None] * P + offs_k[None, :]                             # (BLOCK_R, BLOCK_K)
    b_ptrs = m_ptr + offs_n[None, :] * P + offs_k[:, None]                           # (BLOCK_K, BLOCK_N)
    acc = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, P, BLOCK_K):
        mask_k = (k0 + offs_k) < P
        a = tl.load(a_ptrs, mask=mask_r[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    return acc


@triton.jit
def _forward_kernel(x_ptr, m_ptr, w_ptr, part_ptr, B, C, P, N,
                    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    PRECISION: tl.constexpr):
    """part[s, b, n] = sum_{c in chunk s} w[n,c] * pooled[(b,c), n] for BLOCK_B rows b and BLOCK_N neurons: the
    rows (b,c) of the tile are BLOCK_B batch entries times the BLOCK_C channels of chunk s; one :func:`_pooled`
    GEMM whose float32 result is scaled by w and summed over the channels (epilogue)."""
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    r = tl.arange(0, BLOCK_B * BLOCK_C)
    offs_b = (pid_b * BLOCK_B + r // BLOCK_C).to(tl.int64)
    offs_c = (pid_s * BLOCK_C + r % BLOCK_C).to(tl.int64)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask_n = offs_n < N
    mask_c = offs_c < C
    pooled = _pooled(x_ptr, m_ptr, offs_b * C + offs_c, (offs_b < B) & mask_c, offs_n, mask_n, P,
                     BLOCK_B * BLOCK_C, BLOCK_N, BLOCK_K, PRECISION)
    w = tl.load(w_ptr + offs_n[None, :] * C + offs_c[:, None], mask=mask_c[:, None] & mask_n[None, :],
                other=0.0).to(tl.float32)                                              # w[n, c(r)]
    y = tl.sum(tl.reshape(pooled * w, (BLOCK_B, BLOCK_C, BLOCK_N)), axis=1)
    rows_b = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    out = part_ptr + pid_s.to(tl.int64) * B * N + rows_b[:, None] * N + offs_n[None, :]
    tl.store(out, y, mask=(rows_b < B)[:, None] & mask_n[None, :])


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


@triton.jit
def _grad_features_kernel(gy_ptr, x_ptr, m_ptr, part_ptr, B, C, P, N,
                          BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """part[s, n, c] = sum_{b in chunk s} gy[b,n] * pooled[(b,c), n] for BLOCK_C channels and BLOCK_N neurons: the
    forward's :func:`_pooled` GEMM on the rows of BLOCK_B batch entries (chunk s), scaled by gy and summed over
    them."""
    pid_c = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    r = tl.arange(0, BLOCK_B * BLOCK_C)
    offs_b = (pid_s * BLOCK_B + r // BLOCK_C).to(tl.int64)
    offs_c = (pid_c * BLOCK_C + r % BLOCK_C).to(tl.int64)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask_n = offs_n < N
    mask_b = offs_b < B
    pooled = _pooled(x_ptr, m_ptr, offs_b * C + offs_c, mask_b & (offs_c < C), offs_n, mask_n, P,
                     BLOCK_B * BLOCK_C, BLOCK_N, BLOCK_K, PRECISION)
    gy = tl.load(gy_ptr + offs_b[:, None] * N + offs_n[None, :], mask=mask_b[:, None] & mask_n[None, :],
                 other=0.0).to(tl.float32)                                             # gy[b(r), n]
    g = tl.sum(tl.reshape(pooled * gy, (BLOCK_B, BLOCK_C, BLOCK_N)), axis=0)
    cols_c = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    out = part_ptr + pid_s.to(tl.int64) * N * C + offs_n[None, :] * C + cols_c[:, None]
    tl.store(out, g, mask=(cols_c < C)[:, None] & mask_n[None, :])


# ------------------------------------------------------------------------------------------------------- tiles

#: Candidates of the two pooled-GEMM kernels (forward, grad features): the neuron and pixel blocks; the rows of a
#: tile, BLOCK_B batch entries times BLOCK_C channels, are the launcher's (:func:`_row_blocks`), since they fix the
#: number of partial results.
_POOLED = {
    "fma": [dict(BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
            dict(BLOCK_N=128, BLOCK_K=16, num_warps=8, num_stages=3),
            dict(BLOCK_N=64, BLOCK_K=16, num_warps=4, num_stages=4)],
    "mma": [dict(BLOCK_N=128, BLOCK_K=16, num_warps=8, num_stages=4),
            dict(BLOCK_N=128, BLOCK_K=16, num_warps=8, num_stages=3),
            dict(BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=3),
            dict(BLOCK_N=64, BLOCK_K=16, num_warps=8, num_stages=4),
            dict(BLOCK_N=64, BLOCK_K=16, num_warps=4, num_stages=4)],
    "half": [dict(BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3),
             dict(BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=4),
             dict(BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=4),
             dict(BLOCK_N=64, BLOCK_K=64, num_warps=8, num_stages=3),
             dict(BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=4)],
}

#: kernel -> tile class -> candidate tiles of the autotuner (block sizes, grad spatial's FUSED, num_warps,
#: num_stages). Classes: ``fma`` float32 tiles in "ieee" (FMA units), ``mma`` float32 tiles on tensor cores
#: ("tf32x3", "tf32"; also grad x of fp16/bf16, which contracts float32 products in 3xTF32), ``half`` fp16/bf16 tiles
#: (grad spatial's FUSED stays 0 so that their products stay exact). Every candidate runs in the interpreter tests
#: (tests/ops/test_factorized_readout_precision.py); on sm_90 (compiled ahead of time) all but three fp16/bf16
#: gradient candidates run without spilling registers.
TILE_CONFIGS: dict[str, dict[str, list[dict]]] = {
    "forward": _POOLED,
    "grad_x": {
        "fma": [dict(BLOCK_R=64, BLOCK_P=64, BLOCK_N=32, num_warps=4, num_stages=3),
                dict(BLOCK_R=32, BLOCK_P=64, BLOCK_N=32, num_warps=4, num_stages=3),
                dict(BLOCK_R=64, BLOCK_P=128, BLOCK_N=16, num_warps=8, num_stages=3)],
        "mma": [dict(BLOCK_R=64, BLOCK_P=64, BLOCK_N=32, num_warps=4, num_stages=3),
                dict(BLOCK_R=128, BLOCK_P=64, BLOCK_N=32, num_warps=8, num_stages=3),
                dict(BLOCK_R=64, BLOCK_P=128, BLOCK_N=32, num_warps=8, num_stages=3),
                dict(BLOCK_R=128, BLOCK_P=128, BLOCK_N=16, num_warps=8, num_stages=3)],
    },
    "grad_spatial": {
        "fma": [dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=32, FUSED=0, num_warps=8, num_stages=3),
                dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_N=32, BLOCK_P=64, BLOCK_C=16, FUSED=1, num_warps=4, num_stages=3)],
        "mma": [dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=32, FUSED=0, num_warps=4, num_stages=3),
                dict(BLOCK_N=128, BLOCK_P=64, BLOCK_C=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_N=64, BLOCK_P=128, BLOCK_C=32, FUSED=1, num_warps=8, num_stages=3),
                dict(BLOCK_N=128, BLOCK_P=128, BLOCK_C=16, FUSED=1, num_warps=8, num_stages=3)],
        "half": [dict(BLOCK_N=64, BLOCK_P=64, BLOCK_C=64, FUSED=0, num_warps=4, num_stages=3),
                 dict(BLOCK_N=128, BLOCK_P=64, BLOCK_C=64, FUSED=0, num_warps=8, num_stages=3),
                 dict(BLOCK_N=64, BLOCK_P=128, BLOCK_C=32, FUSED=0, num_warps=8, num_stages=3)],
    },
    "grad_features": _POOLED,
}

#: kernel -> block name -> the extent (from the kernel's B, C, P, N) that block covers.
_EXTENTS = {
    "forward": {"BLOCK_N": lambda a: a["N"], "BLOCK_K": lambda a: a["P"]},
    "grad_x": {"BLOCK_R": lambda a: a["B"] * a["C"], "BLOCK_P": lambda a: a["P"], "BLOCK_N": lambda a: a["N"]},
    "grad_spatial": {"BLOCK_N": lambda a: a["N"], "BLOCK_P": lambda a: a["P"], "BLOCK_C": lambda a: a["C"]},
    "grad_features": {"BLOCK_N": lambda a: a["N"], "BLOCK_K": lambda a: a["P"]},
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


_ROW_BLOCKS = ("BLOCK_B", "BLOCK_C")  # the rows of the pooled-GEMM kernels' tiles: powers of two from 1
_PAIRED = ("forward", "grad_features")
_ROWS = {"fma": 64, "mma": 128, "half": 128}  # rows (b,c) of a pooled-GEMM tile by tile class
_POOLED_K = {True: 16, False: 32}  # the heuristic's pixel block of the pooled kernels, float32 or not (no spills)


def _check_tiles(kernel: str, tiles: dict, dtype: torch.dtype) -> None:
    wanted = set(_EXTENTS[kernel]) | ({"FUSED"} if kernel == "grad_spatial" else set())
    optional = set(_LAUNCH_KEYS) | (set(_ROW_BLOCKS) if kernel in _PAIRED else set())
    missing, unknown = wanted - set(tiles), set(tiles) - wanted - optional
    if missing or unknown:
        raise ValueError(f"factorized_readout (triton): tiles of {kernel} need {sorted(wanted)} (and optionally "
                         f"{sorted(optional)}); missing {sorted(missing)}, unknown {sorted(unknown)}")
    for name in [k for k in tiles if k.startswith("BLOCK_")]:
        size, least = tiles[name], 1 if name in _ROW_BLOCKS else 16
        if not isinstance(size, int) or size < least or size & (size - 1):
            raise ValueError(f"factorized_readout (triton): {kernel} {name} must be a power of two >= {least}, "
                             f"got {size!r}")
    if kernel in _PAIRED and tiles.get("BLOCK_B", 16) * tiles.get("BLOCK_C", 16) < 16:
        raise ValueError(f"factorized_readout (triton): {kernel} needs BLOCK_B * BLOCK_C >= 16 rows, got "
                         f"{tiles.get('BLOCK_B')} * {tiles.get('BLOCK_C')}")
    if tiles.get("FUSED", 0) and dtype != torch.float32:
        raise ValueError(f"factorized_readout (triton): FUSED tiles take float32 inputs (they round the products), "
                         f"got {dtype}")


def _row_blocks(b: int, c: int, rows: int, tiles: Optional[dict], chunks: Optional[int] = None,
                over: str = "c") -> tuple[int, int]:
    """(BLOCK_B, BLOCK_C): a tile's rows (b,c), about ``rows`` of them, as a chunk of up to 64 channels times
    batch entries; ``tiles`` may fix either. ``chunks`` asks for at least that many chunks of the channels
    (``over="c"``) or of the batch (``over="b"``), each one program's share of the reduction."""
    block_c = min(triton.next_power_of_2(max(c, 1)), 64)
    if chunks is not None and over == "c":
        block_c = min(block_c, triton.next_power_of_2(max(-(-c // max(int(chunks), 1)), 1)))
    block_c = (tiles or {}).get("BLOCK_C", block_c)
    block_b = min(triton.next_power_of_2(max(b, 1)), max(rows // block_c, 1))
    if chunks is not None and over == "b":
        block_b = min(block_b, triton.next_power_of_2(max(-(-b // max(int(chunks), 1)), 1)))
    block_b = (tiles or {}).get("BLOCK_B", max(block_b, 16 // block_c))
    return block_b, block_c


def _launch(kernel: str, grid, args: tuple, shape: tuple, heuristic: dict, tiles: Optional[dict],
            dtype: torch.dtype, precision: str, fixed: Optional[dict] = None) -> None:
    """Run ``kernel`` on ``grid(meta)`` for a call of ``shape`` (B, C, P, N): with ``tiles`` when given, else on a
    GPU for calls of at least :data:`TUNE_MIN_WORK` multiply-adds with the tiles the autotuner chose for this
    shape (tuned at its first call; ``DAENR_FAST_TRITON_AUTOTUNE=0`` turns it off), else with ``heuristic``.
    A shape first seen while a CUDA graph is being captured runs the heuristic (no benchmarking in a capture).
    ``fixed`` holds constexprs that are the launcher's choice in every case (the pooled kernels' rows)."""
    fixed = fixed or {}
    if tiles is not None:
        _check_tiles(kernel, tiles, dtype)
        meta = {k: v for k, v in tiles.items() if k not in fixed}
    elif _AUTOTUNE and not _INTERPRET and math.prod(shape) >= TUNE_MIN_WORK:
        key = (kernel, dtype, precision, *shape, *fixed.values())
        meta = _best.get(key)
        if meta is None and torch.cuda.is_current_stream_capturing():
            meta = heuristic
        elif meta is None:
            tuner = _autotuner(kernel, tile_class(kernel, dtype, precision))
            tuner[grid](*args, PRECISION=precision, **fixed)
            best = tuner.best_config
            _best[key] = {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}
            return
        meta = dict(meta)
    else:
        meta = dict(heuristic)
    launch = {k: meta.pop(k) for k in _LAUNCH_KEYS if k in meta}
    meta.update(fixed)
    _KERNELS[kernel][grid(meta)](*args, **meta, PRECISION=precision, **({} if _INTERPRET else launch))


# ------------------------------------------------------------------------------------------------------- launchers

def _block(extent: int, lo: int, hi: int) -> int:
    """Power-of-two block size covering ``extent``, clamped to [lo, hi] (tl.dot needs at least 16)."""
    return max(lo, min(hi, triton.next_power_of_2(max(extent, 1))))


def _check_precision(precision: str) -> None:
    if precision not in FLOAT32_PRECISIONS:
        raise ValueError(f"factorized_readout (triton): precision must be one of {FLOAT32_PRECISIONS}, "
                         f"got {precision!r}")


def kernel_precision(kernel: str, dtype: torch.dtype, precision: str) -> str:
    """The ``input_precision`` of ``kernel``'s dots on ``dtype`` inputs: ``precision`` for float32; fp16/bf16 tiles
    are multiplied exactly and their dots ignore it ("tf32" is passed), except grad x, which contracts float32
    products in "tf32x3"."""
    if dtype == torch.float32:
        return precision
    return "tf32x3" if kernel == "grad_x" else "tf32"


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
    multiplied exactly whatever it says). ``splits`` asks for at least that many channel chunks (programs that
    share the channel sum of an output tile; None: chunks of up to 64 channels; the result does not depend on it
    beyond float32 rounding). ``tiles`` (one entry of :data:`TILE_CONFIGS` ``["forward"]``, optionally with
    BLOCK_B and BLOCK_C) fixes the blocks instead of the heuristic or the autotuner.
    """
    _check(x, spatial, features, *(() if bias is None else (bias,)))
    _check_precision(precision)
    b, c, h, w = x.shape
    n, p = spatial.shape[0], h * w
    if b * n == 0:
        return x.new_zeros((b, n))
    block_b, block_c = _row_blocks(b, c, _ROWS[tile_class("forward", x.dtype, precision)], tiles, splits, "c")
    block_n = _block(n, 16, 128)
    heuristic = dict(BLOCK_N=block_n, BLOCK_K=_block(p, 16, _POOLED_K[x.dtype == torch.float32]),
                     num_warps=8 if block_n >= 64 else 4, num_stages=3)
    count = triton.cdiv(c, block_c) if c else 1
    part = (torch.empty if c else torch.zeros)((count, b, n), device=x.device, dtype=torch.float32)
    if c:
        _launch("forward", lambda meta: (triton.cdiv(b, block_b), triton.cdiv(n, meta["BLOCK_N"]), count),
                (x, spatial, features, part, b, c, p, n), (b, c, p, n), heuristic, tiles, x.dtype,
                kernel_precision("forward", x.dtype, precision), dict(BLOCK_B=block_b, BLOCK_C=block_c))
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
    asks for at least that many batch chunks of gfeatures; ``tiles`` maps kernel names ("grad_x", "grad_spatial", "grad_features") to an entry of
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
                kernel_precision("grad_x", dtype, precision))

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
                dtype, kernel_precision("grad_spatial", dtype, precision))
        gm = part[0] if count == 1 else part.sum(0)

    gw = torch.zeros((n, c), device=x.device, dtype=torch.float32)
    if gw.numel() and b:
        block_b, block_c = _row_blocks(b, c, _ROWS[tile_class("grad_features", dtype, precision)],
                                       tiles.get("grad_features"), splits, "b")
        block_n = _block(n, 16, 128)
        heuristic = dict(BLOCK_N=block_n, BLOCK_K=_block(p, 16, _POOLED_K[dtype == torch.float32]),
                         num_warps=8 if block_n >= 64 else 4, num_stages=3)
        count = triton.cdiv(b, block_b)
        part = torch.empty((count, n, c), device=x.device, dtype=torch.float32)
        _launch("grad_features", lambda meta: (triton.cdiv(c, block_c), triton.cdiv(n, meta["BLOCK_N"]), count),
                (grad, x, spatial, part, b, c, p, n), (b, c, p, n), heuristic, tiles.get("grad_features"),
                dtype, kernel_precision("grad_features", dtype, precision), dict(BLOCK_B=block_b, BLOCK_C=block_c))
        gw = part[0] if count == 1 else part.sum(0)

    gb = grad.to(torch.float32).sum(0)
    return gx, gm.view(n, h, w).to(dtype), gw.to(dtype), gb.to(dtype)


# ------------------------------------------------------------------------------------------ ahead-of-time checks

#: kernel -> its pointer arguments: ``"in"`` (the inputs' dtype) or ``"fp32"`` (float32 partial results).
_POINTERS = {
    "forward": {"x_ptr": "in", "m_ptr": "in", "w_ptr": "in", "part_ptr": "fp32"},
    "grad_x": {"gy_ptr": "in", "m_ptr": "in", "w_ptr": "in", "gx_ptr": "in"},
    "grad_spatial": {"gy_ptr": "in", "x_ptr": "in", "w_ptr": "in", "part_ptr": "fp32"},
    "grad_features": {"gy_ptr": "in", "x_ptr": "in", "m_ptr": "in", "part_ptr": "fp32"},
}
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def compile_ahead(kernel: str, tiles: dict, dtype: torch.dtype, precision: str, capability: int):
    """``kernel`` with ``tiles`` (an entry of :data:`TILE_CONFIGS`) compiled for an NVIDIA GPU of compute
    capability ``capability`` (80: A100, 90: H100/H200) on any machine, GPU or not, with Triton's own ptxas: the
    ``CompiledKernel`` (``.asm`` holds "ttgir", "ptx" and "cubin", ``.metadata.shared`` the shared-memory bytes).
    Integer arguments carry no divisibility hints, so the code is that of a ragged shape. Not under
    ``TRITON_INTERPRET=1``, whose kernels are Python functions."""
    if _INTERPRET:
        raise RuntimeError("compile_ahead needs the compiler: unset TRITON_INTERPRET")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    _check_tiles(kernel, tiles, dtype)
    _check_precision(precision)
    meta = {k: v for k, v in tiles.items() if k not in _LAUNCH_KEYS}
    meta["PRECISION"] = kernel_precision(kernel, dtype, precision)
    fn = _KERNELS[kernel]
    signature = {}
    for name in fn.arg_names:
        if name in meta:
            signature[name] = "constexpr"
        elif name in _POINTERS[kernel]:
            kind = _POINTERS[kernel][name]
            signature[name] = "*" + (_TRITON_TYPES[dtype] if kind == "in" else kind)
        else:
            signature[name] = "i32"
    source = ASTSource(fn=fn, signature=signature, constexprs=meta)
    options = {k: tiles[k] for k in _LAUNCH_KEYS if k in tiles}
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


def ptx_resources(compiled, capability: int) -> dict:
    """Registers, spilled bytes and shared memory of a :func:`compile_ahead` kernel (``ptxas -v`` of its PTX, with
    the ptxas Triton uses), and its tensor-core instructions by input type (``mma``/``wgmma`` lines of the PTX)."""
    import re
    import subprocess
    import tempfile

    from triton.backends.nvidia import compiler as nvidia

    try:
        ptxas = nvidia.get_ptxas(capability).path
    except TypeError:  # Triton versions whose get_ptxas takes no architecture
        ptxas = nvidia.get_ptxas().path
    ptx = compiled.asm["ptx"]
    arch = nvidia.sm_arch_from_capability(capability)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w", encoding="utf-8") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", src, "-o", os.path.join(tmp, "kernel.cubin")],
                             capture_output=True, text=True, check=True)
    log = run.stdout + run.stderr
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else 0  # noqa: E731
    mma = [line for line in ptx.splitlines() if re.search(r"\b(wgmma\.mma_async|mma\.sync)\.", line)]
    return dict(registers=number(r"Used (\d+) registers"), spill_stores=number(r"(\d+) bytes spill stores"),
                spill_loads=number(r"(\d+) bytes spill loads"), shared=int(compiled.metadata.shared),
                mma_tf32=sum(".tf32" in line for line in mma), mma_half=sum(".tf32" not in line for line in mma),
                **({"stack": number(r"(\d+) bytes stack frame")}))
