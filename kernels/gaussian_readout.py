"""Triton kernels of the fused Gaussian readout.

With x (B,C,H,W), grid (B,N,2) or (N,2) (G = B position lists, or G = 1 shared by the batch), f (C,N),
gy = dL/dy (B,N), and the four bilinear taps t of each position (pixel p_t, weight w_t; see
daenr_fast.ops.gaussian_readout; off-map taps read 0):

    y[b,n]     = sum_c f[c,n] sum_t w_t x[b,c,p_t] + bias[n]                                    (B,N)
    dgrid[b,n] = gy[b,n] * (dix/dgx * slope_x(S), diy/dgy * slope_y(S)),  S_t = sum_c f[c,n] x[b,c,p_t]
    df[c,n]    = sum_b gy[b,n] sum_t w_t x[b,c,p_t]                                              (C,N)
    dx[b,c,p]  = sum over the neurons n and taps t with p_t = p of w_t gy[b,n] f[c,n]           (B,C,H,W)

Kernels. The forward and the grid gradient: one program per (b, block of neurons), channels in blocks, the taps
gathered as (channels x neurons) tiles. df: one program per (block of channels, block of neurons), the batch in
order. dx is a gather, not a scatter: a first kernel gives every position the cell of its top-left tap (and its
fractions), a stable sort orders each position list by cell (so each cell lists its neurons in index order) and
``searchsorted`` finds where each cell starts; then one program per (pixel, b, block of channels) adds the
contributions of the neurons of the four cells whose taps reach the pixel, cell by cell in that order. Nothing
uses atomics and every sum has a fixed order, so every gradient is bit-identical from run to run. Scratch: the
cell order (G*N), the fractions (2*G*N), the cell starts (G*(H+1)*(W+1)), f transposed (N*C) and, for a shared
grid, per-batch grid-gradient rows (B*N*2); never (B,C,N).

Precision: positions, weights and every sum are float32; float16/bfloat16 tensors are read as such and the
results rounded once. No ``tl.dot``. Works on CUDA tensors and, under ``TRITON_INTERPRET=1``, on CPU tensors.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------------------------- kernels

@triton.jit
def _locate(gx, gy, H, W, ALIGN: tl.constexpr):
    """Top-left tap (x0, y0) and fractions (fx, fy) of positions; off-map positions (and NaN) get x0 = y0 = -2,
    whose taps are all off the map."""
    if ALIGN:
        ix = (gx + 1) / 2 * (W - 1)
        iy = (gy + 1) / 2 * (H - 1)
    else:
        ix = ((gx + 1) * W - 1) / 2
        iy = ((gy + 1) * H - 1) / 2
    on_map = (ix >= -1) & (ix < W) & (iy >= -1) & (iy < H)
    ix = tl.where(on_map, ix, -2.0)
    iy = tl.where(on_map, iy, -2.0)
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    return x0f.to(tl.int32), y0f.to(tl.int32), ix - x0f, iy - y0f


@triton.jit
def _tap(x0, y0, fx, fy, H, W, DY: tl.constexpr, DX: tl.constexpr):
    """(pixel, on the map, weight) of tap (DY, DX)."""
    xi = x0 + DX
    yi = y0 + DY
    inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
    if DX:
        wx = fx
    else:
        wx = 1 - fx
    if DY:
        wy = fy
    else:
        wy = 1 - fy
    return yi * W + xi, inside, wx * wy


@triton.jit
def _tap_values(rows, x0, y0, fx, fy, H, W, mask_c, mask_n, DY: tl.constexpr, DX: tl.constexpr):
    """x at tap (DY, DX) as float32 (channels x neurons), 0 off the map; ``rows`` points at each channel's plane."""
    pix, inside, _ = _tap(x0, y0, fx, fy, H, W, DY, DX)
    vals = tl.load(rows + pix[None, :], mask=mask_c[:, None] & (inside & mask_n)[None, :], other=0.0)
    return vals.to(tl.float32)


@triton.jit
def _positions(grid_ptr, row, offs_n, mask_n, N):
    g = grid_ptr + row * N * 2 + offs_n * 2
    gx = tl.load(g, mask=mask_n, other=0.0).to(tl.float32)
    gy = tl.load(g + 1, mask=mask_n, other=0.0).to(tl.float32)
    return gx, gy


@triton.jit
def _forward_kernel(x_ptr, grid_ptr, f_ptr, bias_ptr, y_ptr, C, H, W, N, SHARED: tl.constexpr,
                    HAS_BIAS: tl.constexpr, ALIGN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """y[b, block] for one (block of neurons, b)."""
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    if SHARED:
        gx, gy = _positions(grid_ptr, 0, offs_n, mask_n, N)
    else:
        gx, gy = _positions(grid_ptr, b, offs_n, mask_n, N)
    x0, y0, fx, fy = _locate(gx, gy, H, W, ALIGN)
    plane = H * W
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        mask_c = offs_c < C
        f = tl.load(f_ptr + offs_c[:, None] * N + offs_n[None, :], mask=mask_c[:, None] & mask_n[None, :],
                    other=0.0).to(tl.float32)
        rows = x_ptr + (b * C + offs_c[:, None]) * plane
        v = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
        for t in tl.static_range(4):
            pix, inside, w = _tap(x0, y0, fx, fy, H, W, t // 2, t % 2)
            vals = tl.load(rows + pix[None, :], mask=mask_c[:, None] & (inside & mask_n)[None, :], other=0.0)
            v += w[None, :] * vals.to(tl.float32)
        acc += tl.sum(f * v, axis=0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    tl.store(y_ptr + b * N + offs_n, acc.to(y_ptr.dtype.element_ty), mask=mask_n)


@triton.jit
def _grad_grid_kernel(gy_ptr, x_ptr, grid_ptr, f_ptr, out_ptr, C, H, W, N, sx, sy, SHARED: tl.constexpr,
                      ALIGN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[b, block, :] = the grid gradient of (b, n) (float32 rows), for one (block of neurons, b)."""
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    if SHARED:
        gx, gy = _positions(grid_ptr, 0, offs_n, mask_n, N)
    else:
        gx, gy = _positions(grid_ptr, b, offs_n, mask_n, N)
    x0, y0, fx, fy = _locate(gx, gy, H, W, ALIGN)
    plane = H * W
    s0 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    s1 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    s2 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    s3 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        mask_c = offs_c < C
        f = tl.load(f_ptr + offs_c[:, None] * N + offs_n[None, :], mask=mask_c[:, None] & mask_n[None, :],
                    other=0.0).to(tl.float32)
        rows = x_ptr + (b * C + offs_c[:, None]) * plane
        s0 += tl.sum(f * _tap_values(rows, x0, y0, fx, fy, H, W, mask_c, mask_n, 0, 0), axis=0)
        s1 += tl.sum(f * _tap_values(rows, x0, y0, fx, fy, H, W, mask_c, mask_n, 0, 1), axis=0)
        s2 += tl.sum(f * _tap_values(rows, x0, y0, fx, fy, H, W, mask_c, mask_n, 1, 0), axis=0)
        s3 += tl.sum(f * _tap_values(rows, x0, y0, fx, fy, H, W, mask_c, mask_n, 1, 1), axis=0)
    g = tl.load(gy_ptr + b * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    dgx = g * sx * ((1 - fy) * (s1 - s0) + fy * (s3 - s2))
    dgy = g * sy * ((1 - fx) * (s2 - s0) + fx * (s3 - s1))
    out = out_ptr + (b * N + offs_n) * 2
    tl.store(out, dgx, mask=mask_n)
    tl.store(out + 1, dgy, mask=mask_n)


@triton.jit
def _grad_features_kernel(gy_ptr, x_ptr, grid_ptr, df_ptr, B, C, H, W, N, SHARED: tl.constexpr,
                          ALIGN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """df[c block, n block] = sum_b gy[b,n] sum_t w_t x[b,c,p_t], b in order."""
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    mask_n = offs_n < N
    mask_c = offs_c < C
    plane = H * W
    acc = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
    for b in range(0, B):
        if SHARED:
            gx, gy = _positions(grid_ptr, 0, offs_n, mask_n, N)
        else:
            gx, gy = _positions(grid_ptr, b, offs_n, mask_n, N)
        x0, y0, fx, fy = _locate(gx, gy, H, W, ALIGN)
        rows = x_ptr + (b * C + offs_c[:, None]) * plane
        v = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
        for t in tl.static_range(4):
            pix, inside, w = _tap(x0, y0, fx, fy, H, W, t // 2, t % 2)
            vals = tl.load(rows + pix[None, :], mask=mask_c[:, None] & (inside & mask_n)[None, :], other=0.0)
            v += w[None, :] * vals.to(tl.float32)
        g = tl.load(gy_ptr + b * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc += g[None, :] * v
    tl.store(df_ptr + offs_c[:, None] * N + offs_n[None, :], acc, mask=mask_c[:, None] & mask_n[None, :])


@triton.jit
def _cells_kernel(grid_ptr, key_ptr, fx_ptr, fy_ptr, H, W, N, ALIGN: tl.constexpr, BLOCK_N: tl.constexpr):
    """key = (y0+1)*(W+1) + (x0+1), the cell of the top-left tap ((H+1)*(W+1) for positions off the map), and the
    fractions, for one block of one position list."""
    pid_n = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    gx, gy = _positions(grid_ptr, row, offs_n, mask_n, N)
    x0, y0, fx, fy = _locate(gx, gy, H, W, ALIGN)
    key = tl.where(x0 >= -1, (y0 + 1) * (W + 1) + (x0 + 1), (H + 1) * (W + 1))
    out = row * N + offs_n
    tl.store(key_ptr + out, key, mask=mask_n)
    tl.store(fx_ptr + out, fx, mask=mask_n)
    tl.store(fy_ptr + out, fy, mask=mask_n)


@triton.jit
def _grad_x_kernel(gy_ptr, ft_ptr, order_ptr, start_ptr, fx_ptr, fy_ptr, dx_ptr, C, H, W, N, SHARED: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    """dx[b, c block, p] for one (pixel p, b, block of channels): the neurons of the four cells whose taps reach
    p, cell by cell, each cell's neurons in index order."""
    p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    offs_c = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    mask_c = offs_c < C
    if SHARED:
        row = b * 0
    else:
        row = b
    cells = (H + 1) * (W + 1) + 1
    y = p // W
    x = p - y * W
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for t in tl.static_range(4):
        dy = t // 2
        dx = t % 2
        cell = row * cells + (y - dy + 1) * (W + 1) + (x - dx + 1)
        start = tl.load(start_ptr + cell)
        end = tl.load(start_ptr + cell + 1)
        for i in range(start, end):
            n = tl.load(order_ptr + row * N + i).to(tl.int64)
            if dx:
                wx = tl.load(fx_ptr + row * N + n)
            else:
                wx = 1 - tl.load(fx_ptr + row * N + n)
            if dy:
                wy = tl.load(fy_ptr + row * N + n)
            else:
                wy = 1 - tl.load(fy_ptr + row * N + n)
            g = tl.load(gy_ptr + b * N + n).to(tl.float32)
            fv = tl.load(ft_ptr + n * C + offs_c, mask=mask_c, other=0.0).to(tl.float32)
            acc += (wx * wy * g) * fv
    tl.store(dx_ptr + (b * C + offs_c) * (H * W) + p, acc.to(dx_ptr.dtype.element_ty), mask=mask_c)


# ------------------------------------------------------------------------------------------------------- launchers

def _block(extent: int, lo: int, hi: int) -> int:
    """Power-of-two block size covering ``extent``, clamped to [lo, hi]."""
    return max(lo, min(hi, triton.next_power_of_2(max(extent, 1))))


def _check(x: torch.Tensor, *tensors: torch.Tensor) -> None:
    if x.dtype not in _DTYPES:
        raise TypeError(f"gaussian_readout (triton): dtype must be float32, float16 or bfloat16, got {x.dtype}")
    for t in (x, *tensors):
        if t.dtype != x.dtype or not t.is_contiguous():
            raise ValueError("gaussian_readout (triton): inputs must be contiguous and share one dtype")


def _scale(size: int, align_corners: bool) -> float:
    """d(source coordinate)/d(position) on an axis of ``size`` pixels."""
    return (size - 1) / 2 if align_corners else size / 2


def forward(x: torch.Tensor, grid: torch.Tensor, features: torch.Tensor, bias: Optional[torch.Tensor],
            align_corners: bool) -> torch.Tensor:
    """y (B,N) of x (B,C,H,W) at grid (B,N,2) or (N,2), weighted by features (C,N), plus bias (N,) or None."""
    _check(x, grid, features, *(() if bias is None else (bias,)))
    b, c, h, w = x.shape
    n = features.shape[1]
    y = torch.empty((b, n), device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    block_n, block_c = _block(n, 16, 128), _block(c, 16, 32)
    _forward_kernel[(triton.cdiv(n, block_n), b)](
        x, grid, features, x if bias is None else bias, y, c, h, w, n, SHARED=grid.dim() == 2,
        HAS_BIAS=bias is not None, ALIGN=align_corners, BLOCK_N=block_n, BLOCK_C=block_c, **_launch_options(4))
    return y


def backward(grad: torch.Tensor, x: torch.Tensor, grid: torch.Tensor, features: torch.Tensor,
             align_corners: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx (B,C,H,W) in x's dtype, dgrid (grid's shape), dfeatures (C,N), dbias (N,), the last three float32)
    given grad = dL/dy (B,N)."""
    _check(x, grad, grid, features)
    b, c, h, w = x.shape
    n = features.shape[1]
    shared = grid.dim() == 2
    lists = 1 if shared else b  # position lists
    dx = torch.zeros_like(x)
    rows = torch.zeros((b, n, 2), device=x.device, dtype=torch.float32)
    df = torch.zeros((c, n), device=x.device, dtype=torch.float32)
    gb = grad.to(torch.float32).sum(0)
    if b * n == 0:
        return dx, (rows.sum(0) if shared else rows), df, gb
    block_n = _block(n, 16, 128)
    if c:
        block_c = _block(c, 16, 32)
        _grad_features_kernel[(triton.cdiv(n, block_n), triton.cdiv(c, block_c))](
            grad, x, grid, df, b, c, h, w, n, SHARED=shared, ALIGN=align_corners, BLOCK_N=block_n,
            BLOCK_C=block_c, **_launch_options(4))
        _grad_grid_kernel[(triton.cdiv(n, block_n), b)](
            grad, x, grid, features, rows, c, h, w, n, _scale(w, align_corners), _scale(h, align_corners),
            SHARED=shared, ALIGN=align_corners, BLOCK_N=block_n, BLOCK_C=block_c, **_launch_options(4))

        keys = torch.empty((lists, n), device=x.device, dtype=torch.int32)
        fx = torch.empty((lists, n), device=x.device, dtype=torch.float32)
        fy = torch.empty_like(fx)
        _cells_kernel[(triton.cdiv(n, block_n), lists)](grid, keys, fx, fy, h, w, n, ALIGN=align_corners,
                                                          BLOCK_N=block_n, **_launch_options(4))
        sorted_keys, order = torch.sort(keys, dim=1, stable=True)
        cells = torch.arange((h + 1) * (w + 1) + 1, device=x.device, dtype=torch.int32)
        starts = torch.searchsorted(sorted_keys, cells.expand(lists, -1).contiguous()).to(torch.int32)
        ft = features.t().contiguous()
        block_c = _block(c, 16, 128)
        _grad_x_kernel[(h * w, b, triton.cdiv(c, block_c))](
            grad, ft, order.to(torch.int32), starts, fx, fy, dx, c, h, w, n, SHARED=shared, BLOCK_C=block_c,
            **_launch_options(4))
    return dx, (rows.sum(0) if shared else rows), df, gb


def _launch_options(num_warps: int) -> dict:
    """Compiler options for a GPU launch (the interpreter takes none)."""
    return {} if _INTERPRET else {"num_warps": num_warps}
