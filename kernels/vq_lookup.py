"""Triton kernel of the VQ nearest-codebook lookup (see :mod:`daenr_fast.ops.vq_lookup` for the method and the full
precision argument).

One program owns BLOCK_M rows. It centres and scales them on the fly, ``Z = fl(z s - c s)`` in float32 (the
frame -- s, the scaled centre c s, the scaled codes E, their squared norms ``en`` (NaN for non-finite codes) and
``en_max`` -- comes from the caller), takes ``||Z||^2`` in float64 and the row window ``W = a (en_max + 2 ||Z|| sqrt(en_max)) + b ||Z||^2``,
then walks the codebook in BLOCK_K tiles: scores ``x = en - 2 Z E^T`` from ``tl.dot`` over BLOCK_D slices (float32
accumulation; IEEE products for float32 inputs, TF32 for half inputs, whose input rounding ``TF32_ROUNDOFF`` the
caller puts into ``a``), the running row minimum of the scores (NaN ignored), and the tile's candidates
``!(x > min + 2W)``. Candidates are rescored one code per row at a time (lowest code first): the exact
``sum_d (z_d - e_kd)^2`` in float64 from the original inputs; a strictly smaller distance wins, so ties go to the
lowest index, and NaN never wins (a row with only NaN distances gets index 0, distance NaN). Every score is within
``W/2`` of the true scaled distance, so the true argmin is always rescored; the index is exact up to float64
rounding of the distances, the distance is rounded once to float32 (+inf beyond its range). Scaling before the
subtraction is exact, so flushing subnormals could only drop values far below the window. Nothing of size
M x K is stored.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

#: relative rounding of a float32 ``tl.dot`` input in TF32 (10 stored bits; truncation allowed)
TF32_ROUNDOFF = 2.0 ** -10
#: the smallest float64 that rounds to +inf in float32: the float32 maximum plus half its last unit
FLOAT32_OVERFLOW: tl.constexpr = tl.constexpr((2.0 - 2.0 ** -24) * 2.0 ** 127)


@triton.jit
def _centred_rows(z_ptr, centre_ptr, rows, row_ok, d0, dims, D, scale):
    """Z[rows, d0 + dims] = fl(z s - c s) in float32 (centre_ptr holds c s), zero outside the bounds."""
    d_ok = (d0 + dims) < D
    mask = row_ok[:, None] & d_ok[None, :]
    zt = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + d0 + dims[None, :], mask=mask, other=0.0)
    cs = tl.load(centre_ptr + d0 + dims, mask=d_ok, other=0.0)
    return tl.where(mask, zt.to(tl.float32) * scale - cs[None, :], 0.0)


@triton.jit
def _vq_lookup_kernel(z_ptr, e_ptr, centre_ptr, codes_ptr, sqnorm_ptr, stats_ptr, idx_ptr, dist_ptr, M, K, D,
                      window_codes, window_rows, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                      BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    dims = tl.arange(0, BLOCK_D)
    scale = tl.load(stats_ptr)
    en_max = tl.load(stats_ptr + 1).to(tl.float64)
    zn2 = tl.zeros([BLOCK_M], dtype=tl.float64)
    for d0 in range(0, D, BLOCK_D):
        zc = _centred_rows(z_ptr, centre_ptr, rows, row_ok, d0, dims, D, scale).to(tl.float64)
        zn2 += tl.sum(zc * zc, axis=1)
    window = (window_codes * (en_max + 2.0 * tl.sqrt(zn2) * tl.sqrt(en_max)) + window_rows * zn2).to(tl.float32)

    xmin = tl.full([BLOCK_M], float("inf"), tl.float32)
    best = tl.full([BLOCK_M], float("inf"), tl.float64)
    arg = tl.full([BLOCK_M], -1, tl.int64)
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)
        code_ok = codes < K
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            zc = _centred_rows(z_ptr, centre_ptr, rows, row_ok, d0, dims, D, scale)
            d_ok = (d0 + dims) < D
            et = tl.load(codes_ptr + codes[:, None].to(tl.int64) * D + d0 + dims[None, :],
                         mask=code_ok[:, None] & d_ok[None, :], other=0.0)
            if IEEE:
                acc += tl.dot(zc, tl.trans(et), input_precision="ieee")
            else:
                acc += tl.dot(zc, tl.trans(et))
        en = tl.load(sqnorm_ptr + codes, mask=code_ok, other=float("inf"))  # padding codes never lead
        x = en[None, :] - 2.0 * acc
        xmin = tl.minimum(xmin, tl.min(tl.where(x == x, x, float("inf")), axis=1))
        thr = xmin + 2.0 * window
        cand = (x <= thr[:, None]) | (x != x) | (thr != thr)[:, None]
        cand = cand & row_ok[:, None] & code_ok[None, :]
        while tl.max(tl.max(cand.to(tl.int32), axis=1), axis=0) > 0:
            first = tl.min(tl.where(cand, codes[None, :], K), axis=1)
            has = first < K
            exact = tl.zeros([BLOCK_M], dtype=tl.float64)
            for d0 in range(0, D, BLOCK_D):
                mask = has[:, None] & ((d0 + dims) < D)[None, :]
                zt = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + d0 + dims[None, :], mask=mask, other=0.0)
                et = tl.load(e_ptr + first[:, None].to(tl.int64) * D + d0 + dims[None, :], mask=mask, other=0.0)
                diff = zt.to(tl.float64) - et.to(tl.float64)
                exact += tl.sum(diff * diff, axis=1)
            better = has & ((exact < best) | ((arg < 0) & (exact == exact)))
            best = tl.where(better, exact, best)
            arg = tl.where(better, first.to(tl.int64), arg)
            cand = cand & (codes[None, :] != first[:, None])
    none = arg < 0
    best = tl.where(best >= FLOAT32_OVERFLOW, float("inf"), best)  # what rounding to float32 gives, stated
    tl.store(idx_ptr + rows, tl.where(none, 0, arg), mask=row_ok)
    tl.store(dist_ptr + rows, tl.where(none, float("nan"), best).to(tl.float32), mask=row_ok)


def forward(z: torch.Tensor, codebook: torch.Tensor, centre: torch.Tensor, codes: torch.Tensor, sqnorm: torch.Tensor,
            stats: torch.Tensor, window_codes: float, window_rows: float, ieee: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (M,) int64, squared distances (M,) float32) for contiguous z (M,D), codebook (K,D), K >= 1, and its
    frame in float32: the scaled centre (D,), scaled codes (K,D), their squared norms (K,), stats = (scale,
    en_max)."""
    m, d = z.shape
    idx = torch.zeros(m, dtype=torch.int64, device=z.device)
    dist = torch.zeros(m, dtype=torch.float32, device=z.device)
    if m == 0 or d == 0:
        return idx, dist
    block_m, block_k, block_d = 64, 64, 32
    grid = (triton.cdiv(m, block_m),)
    _vq_lookup_kernel[grid](z, codebook, centre, codes, sqnorm, stats, idx, dist, m, codebook.shape[0], d,
                            window_codes, window_rows, IEEE=ieee, BLOCK_M=block_m, BLOCK_K=block_k,
                            BLOCK_D=block_d)
    return idx, dist
