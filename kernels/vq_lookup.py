"""Triton kernel of the VQ nearest-codebook lookup (see :mod:`daenr_fast.ops.vq_lookup` for the math).

One program owns BLOCK_M rows and walks the codebook in BLOCK_K tiles: ``||e||^2 - 2 z e^T`` of a tile comes
from ``tl.dot`` over BLOCK_D slices (float32 accumulation; IEEE float32 products for float32 inputs, no TF32),
its row minimum and leftmost argmin update a running best only on a strict improvement, so ties go to the
lowest index. Nothing of size M x K is stored.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _vq_argmin_kernel(z_ptr, e_ptr, e_norm_ptr, idx_ptr, dist_ptr, M, K, D, IEEE: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    dims = tl.arange(0, BLOCK_D)
    z_norm = tl.zeros([BLOCK_M], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        mask = row_ok[:, None] & ((d0 + dims)[None, :] < D)
        zt = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + d0 + dims[None, :], mask=mask, other=0.0)
        zt = zt.to(tl.float32)
        z_norm += tl.sum(zt * zt, axis=1)
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    arg = tl.zeros([BLOCK_M], dtype=tl.int64)
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)
        code_ok = codes < K
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d_ok = (d0 + dims) < D
            zt = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + d0 + dims[None, :],
                         mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            et = tl.load(e_ptr + codes[:, None].to(tl.int64) * D + d0 + dims[None, :],
                         mask=code_ok[:, None] & d_ok[None, :], other=0.0)
            if IEEE:
                acc += tl.dot(zt, tl.trans(et), input_precision="ieee")
            else:
                acc += tl.dot(zt, tl.trans(et))
        e_norm = tl.load(e_norm_ptr + codes, mask=code_ok, other=0.0)
        dist = tl.where(code_ok[None, :], e_norm[None, :] - 2.0 * acc, float("inf"))
        tile_min = tl.min(dist, axis=1)
        tile_arg = tl.argmin(dist, axis=1, tie_break_left=True)
        better = tile_min < best
        best = tl.where(better, tile_min, best)
        arg = tl.where(better, tile_arg.to(tl.int64) + k0, arg)
    tl.store(idx_ptr + rows, arg, mask=row_ok)
    tl.store(dist_ptr + rows, tl.maximum(z_norm + best, 0.0), mask=row_ok)


def forward(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (M,) int64, squared distances (M,) float32) for contiguous z (M,D), codebook (K,D), K >= 1."""
    m, d = z.shape
    idx = torch.zeros(m, dtype=torch.int64, device=z.device)
    dist = torch.empty(m, dtype=torch.float32, device=z.device)
    if m == 0:
        return idx, dist
    e_norm = codebook.float().pow(2).sum(1)
    block_m, block_k, block_d = 64, 64, 32
    grid = (triton.cdiv(m, block_m),)
    _vq_argmin_kernel[grid](z, codebook, e_norm, idx, dist, m, codebook.shape[0], d,
                            IEEE=z.dtype == torch.float32, BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_D=block_d)
    return idx, dist
