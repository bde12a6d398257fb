"""Triton kernels of the fused factorized readout.

With P = H*W, x (B,C,P), m = spatial (N,P), w = features (N,C), gy = dL/dy (B,N):

    y[b,n]  = sum_c w[n,c] * (sum_p x[b,c,p] m[n,p]) + bias[n]                      (B,N)
    gx[b,c,p] = sum_n (gy[b,n] w[n,c]) m[n,p]                                       (B,C,P)
    gm[n,p] = sum_b gy[b,n] * (sum_c w[n,c] x[b,c,p])                               (N,P)
    gw[n,c] = sum_b gy[b,n] * (sum_p m[n,p] x[b,c,p])                               (N,C)
    gb[n]   = sum_b gy[b,n]                                                          (N,)

Each kernel is a blocked GEMM on ``tl.dot`` with a float32 accumulator. Forward, grad spatial and grad features
keep the per-neuron factor (w[n,c] or gy[b,n]) outside the dot: each ``tl.dot`` contracts raw input tiles and its
float32 result is scaled row- or column-wise before it is added, so no rounded products enter the tensor cores and
fp16/bf16 inputs are multiplied exactly. Grad x needs the product gy[b,n] w[n,c] inside the contraction over n;
it is formed in float32 (for fp16/bf16 the dot then runs in 3xTF32, close to float32). float32 inputs use
``input_precision="ieee"`` throughout, so the float32 backend matches the reference to float32 rounding.

Block sizes are fixed per dtype (no autotuning, so a new shape costs no benchmarking): float32 dots run on FMA
units and take shallower blocks than the tensor-core fp16/bf16 dots, chosen so that no kernel spills registers on
sm_80/sm_90 when the channel and pixel counts are multiples of 16.

When the output tiles alone are too few to fill the GPU, the forward splits its channels and the two weight
gradients split the batch across programs (split-K); each split writes a float32 partial result and the launcher
sums them in a fixed order (deterministic). The (B,C,N) and (B,N,P) intermediates never exist.

Works on CUDA tensors and, under ``TRITON_INTERPRET=1``, on CPU tensors.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_MAX_SPLITS = 64


# ------------------------------------------------------------------------------------------------------- kernels

@triton.jit(do_not_specialize=["c_per_split"])
def _forward_kernel(x_ptr, m_ptr, w_ptr, part_ptr, B, C, P, N, c_per_split,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr):
    """part[s, b, n] = sum_{c in split s} w[n,c] * sum_p x[b,c,p] m[n,p] for one (BLOCK_B x BLOCK_N) tile."""
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
                         PRECISION: tl.constexpr):
    """part[s, n, p] = sum_{b in split s} gy[b,n] * sum_c w[n,c] x[b,c,p] for one (BLOCK_N x BLOCK_P) tile."""
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
            acc += tl.dot(w_tile, x_tile, input_precision=PRECISION) * g_b[:, None]
    out = part_ptr + pid_s.to(tl.int64) * N * P + offs_n[:, None] * P + offs_p[None, :]
    tl.store(out, acc, mask=mask_n[:, None] & mask_p[None, :])


@triton.jit(do_not_specialize=["b_per_split"])
def _grad_features_kernel(gy_ptr, x_ptr, m_ptr, part_ptr, B, C, P, N, b_per_split,
                          BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                          PRECISION: tl.constexpr):
    """part[s, n, c] = sum_{b in split s} gy[b,n] * sum_p m[n,p] x[b,c,p] for one (BLOCK_N x BLOCK_C) tile."""
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
            acc += tl.dot(m_tile, x_tile, input_precision=PRECISION) * g_b[:, None]
    out = part_ptr + pid_s.to(tl.int64) * N * C + offs_n[:, None] * C + offs_c[None, :]
    tl.store(out, acc, mask=mask_n[:, None] & mask_c[None, :])


# ------------------------------------------------------------------------------------------------------- launchers

def _block(extent: int, lo: int, hi: int) -> int:
    """Power-of-two block size covering ``extent``, clamped to [lo, hi] (tl.dot needs at least 16)."""
    return max(lo, min(hi, triton.next_power_of_2(max(extent, 1))))


def _precision(dtype: torch.dtype) -> str:
    """Dot precision for tiles of ``dtype``: exact float32 products for float32 (ignored for fp16/bf16 tiles)."""
    return "ieee" if dtype == torch.float32 else "tf32"


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
            *, splits: Optional[int] = None) -> torch.Tensor:
    """y (B,N) = readout of x (B,C,H,W) by spatial (N,H,W) and features (N,C), plus bias (N,) or None.

    ``splits`` overrides how many programs share the channel sum of each output tile (None: chosen from the
    shape and the GPU; the result does not depend on it beyond float32 rounding).
    """
    _check(x, spatial, features, *(() if bias is None else (bias,)))
    b, c, h, w = x.shape
    n, p = spatial.shape[0], h * w
    if b * n == 0:
        return x.new_zeros((b, n))
    # float32 dots run on FMA units ("ieee"): a shallower pixel block keeps their operands in registers
    block_b, block_n = _block(b, 16, 64), _block(n, 16, 128)
    block_p = _block(p, 16, 32 if x.dtype == torch.float32 else 64)
    tiles = triton.cdiv(b, block_b) * triton.cdiv(n, block_n)
    c_per, count = _split(c, _split_count(tiles, c, 2, x.device, splits))
    part = torch.empty((count, b, n), device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(b, block_b), triton.cdiv(n, block_n), count)
    _forward_kernel[grid](x, spatial, features, part, b, c, p, n, c_per,
                          BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_P=block_p, PRECISION=_precision(x.dtype),
                          **_launch_options(num_warps=8 if block_b * block_n >= 64 * 128 else 4))
    y = part[0] if count == 1 else part.sum(0)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype)


def backward(grad: torch.Tensor, x: torch.Tensor, spatial: torch.Tensor, features: torch.Tensor,
             *, splits: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (gx (B,C,H,W), gspatial (N,H,W), gfeatures (N,C), gbias (N,)) given grad = dL/dy (B,N).

    ``splits`` overrides how many programs share the batch sum of each tile of gspatial and gfeatures.
    """
    _check(grad, x, spatial, features)
    b, c, h, w = x.shape
    n, p = spatial.shape[0], h * w
    dtype = x.dtype
    gx = torch.empty_like(x)
    if gx.numel():
        block_r, block_p, block_n = _block(b * c, 16, 64), _block(p, 16, 64), _block(n, 16, 32)
        grid = (triton.cdiv(b * c, block_r), triton.cdiv(p, block_p))
        precision = "ieee" if dtype == torch.float32 else "tf32x3"
        _grad_x_kernel[grid](grad, spatial, features, gx, b, c, p, n,
                             BLOCK_R=block_r, BLOCK_P=block_p, BLOCK_N=block_n, PRECISION=precision,
                             **_launch_options(num_warps=4))

    gm = torch.zeros((n, p), device=x.device, dtype=torch.float32)
    if gm.numel():
        block_n, block_p = _block(n, 16, 64), _block(p, 16, 64)
        block_c = _block(c, 16, 32 if dtype == torch.float32 else 64)
        tiles = triton.cdiv(n, block_n) * triton.cdiv(p, block_p)
        b_per, count = _split(b, _split_count(tiles, b, 2, x.device, splits))
        part = torch.empty((count, n, p), device=x.device, dtype=torch.float32)
        grid = (triton.cdiv(n, block_n), triton.cdiv(p, block_p), count)
        _grad_spatial_kernel[grid](grad, x, features, part, b, c, p, n, b_per,
                                   BLOCK_N=block_n, BLOCK_P=block_p, BLOCK_C=block_c, PRECISION=_precision(dtype),
                                   **_launch_options(num_warps=8 if dtype == torch.float32 else 4))
        gm = part[0] if count == 1 else part.sum(0)

    gw = torch.zeros((n, c), device=x.device, dtype=torch.float32)
    if gw.numel():
        block_n, block_c = _block(n, 16, 64), _block(c, 16, 64)
        block_p = _block(p, 16, 32 if dtype == torch.float32 else 64)
        tiles = triton.cdiv(n, block_n) * triton.cdiv(c, block_c)
        b_per, count = _split(b, _split_count(tiles, b, 1, x.device, splits))
        part = torch.empty((count, n, c), device=x.device, dtype=torch.float32)
        grid = (triton.cdiv(n, block_n), triton.cdiv(c, block_c), count)
        _grad_features_kernel[grid](grad, x, spatial, part, b, c, p, n, b_per,
                                    BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_P=block_p, PRECISION=_precision(dtype),
                                    **_launch_options(num_warps=4))
        gw = part[0] if count == 1 else part.sum(0)

    gb = grad.to(torch.float32).sum(0)
    return gx, gm.view(n, h, w).to(dtype), gw.to(dtype), gb.to(dtype)


def _launch_options(num_warps: int) -> dict:
    """Compiler options for a GPU launch (the interpreter takes none)."""
    return {} if _INTERPRET else {"num_warps": num_warps, "num_stages": 3}
