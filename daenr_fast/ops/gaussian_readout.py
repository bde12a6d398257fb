"""Fused Gaussian readout (bilinear point sampling + feature weighting): op definition, public function, backends.

    y[b,n] = sum_c features[c,n] * bilinear(x[b,c], grid[b,n]) + bias[n]

x (B,C,H,W); grid (B,N,2) positions (x then y, -1..1 spanning the map, as ``F.grid_sample``) or (N,2), the same
for every batch entry; features (C,N) (neuralpredictors' ``(1,C,1,N)`` parameter viewed as (C,N)); bias (N,) or
None -> y (B,N). Exactly ``F.grid_sample(x, grid.view(B,N,1,2), mode="bilinear", padding_mode="zeros",
align_corners=...)`` followed by the feature sum (:func:`daenr_fast.ops.reference.gaussian_readout`).

Bilinear sampling. With ``ix = (gx + 1) / 2 * (W - 1)`` (``align_corners=True``) or ``((gx + 1) * W - 1) / 2``
(False), likewise ``iy`` from gy and H, ``x0 = floor(ix)``, ``fx = ix - x0`` (``y0``, ``fy`` alike), the four
taps are (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1) with weights (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx fy;
a tap outside the map reads 0 (zero padding), so positions with |g| > 1 fade out and far ones give 0.

Gradients, with v_t[b,c,n] the value of tap t (0 outside) and S_t[b,n] = sum_c features[c,n] v_t[b,c,n]:

    dx[b,c,p]      = sum_{n,t: tap t of (b,n) is p} w_t[b,n] dy[b,n] features[c,n]
    dgrid[b,n,0]   = dy[b,n] * dix/dgx * ((1-fy)(S_01 - S_00) + fy (S_11 - S_10))      dix/dgx = (W-1)/2 or W/2
    dgrid[b,n,1]   = dy[b,n] * diy/dgy * ((1-fx)(S_10 - S_00) + fx (S_11 - S_01))
    dfeatures[c,n] = sum_b dy[b,n] sum_t w_t[b,n] v_t[b,c,n]
    dbias[n]       = sum_b dy[b,n]

(one-sided derivatives at integer ix, iy, as grid_sample: x0 = floor(ix)); a shared grid's gradient is summed
over the batch.

Memory: the fused backends never hold a (B,C,N) tensor; their scratch is O(B*N + B*H*W) (tap tables and, on the
GPU, the neuron order per cell) besides the outputs. Determinism: every backward is bit-identical run to run, with
no floating-point atomics. dx, the scatter, is the hard part: the cpu backend gives each batch entry's dx to one
thread, which adds the neurons' contributions in neuron order; the cuda and triton backends sort the neurons by
the cell of their top-left tap once per call (a stable sort, so each cell lists its neurons in index order) and
let every (b, pixel) gather from the four cells whose taps touch it, in that order. The other gradients are
reductions with one owner per output element, summed in a fixed order. The torch backend computes its gradients
with grid_sample's own backward on CPU (deterministic there) and, on CUDA (where grid_sample's backward uses
atomics), with the differentiable formula above, whose dx is accumulated by a sort-based ``index_put``.

Precision: float16/bfloat16 are computed in float32 and the results rounded once. A backward that builds a graph
(``create_graph=True``, second derivatives) uses the differentiable torch formula of the gradients above.
vmap over stacked inputs (x, and grid when per-batch) folds them into the batch dimension; anything else runs
one call per batch entry.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from daenr_fast import _build, _dispatch, _validate
from daenr_fast.ops import reference
from daenr_fast.ops._define import STANDARD_DTYPES, OpDef, define, gradients_like_first_input, tracing

TAPS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (dy, dx) of the four bilinear taps from the top-left one


def gaussian_readout(x: Tensor, grid: Tensor, features: Tensor, bias: Optional[Tensor] = None, *,
                     align_corners: bool = True, validate: bool = True, backend: Optional[str] = None) -> Tensor:
    """Gaussian (point) readout of a feature map, fused; see the module docstring for the math.

    Args:
        x: feature map (B,C,H,W).
        grid: positions (B,N,2), or (N,2) shared by the batch: x then y, in [-1, 1] over the map (as
            ``F.grid_sample``); outside positions read zeros.
        features: feature weights (C,N) (neuralpredictors' ``_features`` (1,C,1,N) viewed as (C,N)).
        bias: per-neuron bias (N,) or None.
        align_corners: grid_sample's convention: True puts -1 and 1 on the centres of the corner pixels, False on
            their outer edges.
        validate: raise ``ValueError`` on non-finite positions (one extra read of grid); skipped while tracing
            (``torch.compile``, fake tensors, ``torch.func`` transforms), which cannot raise on data.
        backend: ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; None chooses (see :mod:`daenr_fast._dispatch`).

    Returns:
        y (B,N) in the dtype of ``x`` (half types are computed in float32).
    """
    _validate.check_tensor(x, "x", 4, "(B,C,H,W)")
    _validate.check_tensor_any_rank(grid, "grid", "(B,N,2) or (N,2)")
    _validate.check_tensor(features, "features", 2, "(C,N)")
    if bias is not None:
        _validate.check_tensor(bias, "bias", 1, "(N,)")
    _validate.check_same_dtype_device(x=x, grid=grid, features=features, bias=bias)
    if not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be True or False, got {align_corners!r}")
    b, c, h, w = x.shape
    if h == 0 or w == 0:
        raise ValueError(f"x must have a non-empty map (H, W >= 1), got shape {tuple(x.shape)}")
    n = features.shape[1]
    if features.shape[0] != c:
        raise ValueError(f"features must have shape (C,N)=({c},N) to match x (B,C,H,W)={tuple(x.shape)}, "
                         f"got {tuple(features.shape)}")
    expected = {2: (n, 2), 3: (b, n, 2)}.get(grid.dim())
    if tuple(grid.shape) != expected:
        raise ValueError(f"grid must have shape (B,N,2)=({b},{n},2) or (N,2)=({n},2) to match x (B={b}) and "
                         f"features (N={n}), got {tuple(grid.shape)}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must have shape (N,)=({n},), got {tuple(bias.shape)}")
    if validate and not tracing(grid) and grid.device.type != "meta":
        _raise_if_not_finite(grid)
    chosen = _dispatch.resolve_backend(OP.name, backend, x.device, x.dtype, work=4 * b * c * n)
    return OP(x.contiguous(), grid.contiguous(), features.contiguous(),
              None if bias is None else bias.contiguous(), align_corners, chosen)


def _raise_if_not_finite(grid: Tensor) -> None:
    bad = ~torch.isfinite(grid.detach())
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"grid must hold finite positions: {int(bad.sum())} NaN or infinite entries, the first at "
                         f"index {first} (value {grid[first].item()})")


# ----------------------------------------------------------------------------------------------- backends

def _torch_forward(x, grid, features, bias, align_corners):
    return reference.gaussian_readout(x, grid, features, bias, align_corners)


def _torch_backward(grad, x, grid, features, align_corners):
    """(dx, dgrid, dfeatures, dbias) in the accumulation dtype: grid_sample's backward on CPU (deterministic
    there), the formula of :func:`gradients` elsewhere (grid_sample's CUDA backward uses atomics)."""
    if x.device.type == "cpu":
        return _grid_sample_gradients(grad, x, grid, features, align_corners)
    return gradients(grad, x, grid, features, align_corners)


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _grid_sample_gradients(grad, x, grid, features, align_corners):
    """grid_sample's own backward kernel, called directly (autograd does not run inside a custom op)."""
    acc = _accumulation(x.dtype)
    b, c = x.shape[:2]
    n = features.shape[1]
    gy, xs, f = grad.to(acc), x.to(acc), features.to(acc)
    positions = (grid.expand(b, n, 2) if grid.dim() == 2 else grid).to(acc).reshape(b, n, 1, 2)
    sampled = torch.nn.functional.grid_sample(xs, positions, mode="bilinear", padding_mode="zeros",
                                              align_corners=align_corners)[..., 0]  # (B,C,N)
    grad_sampled = (gy[:, None, :] * f)[..., None]
    dx, dgrid = torch.ops.aten.grid_sampler_2d_backward(grad_sampled, xs, positions, 0, 0, align_corners,
                                                        [True, True])  # bilinear, zeros
    dgrid = dgrid.reshape(b, n, 2)
    if grid.dim() == 2:
        dgrid = dgrid.sum(0)
    return dx, dgrid, torch.einsum("bn,bcn->cn", gy, sampled), gy.sum(0)


def bilinear_taps(grid: Tensor, h: int, w: int, align_corners: bool):
    """The four taps of every position, in :data:`TAPS` order, each as (flat pixel index (..., N) int64 clamped
    into the map, inside (..., N) bool, weight (..., N), 0 outside the map); and (fx, fy, dix/dgx, diy/dgy).
    Weights and fractions are differentiable in grid."""
    if align_corners:
        ix, iy = (grid[..., 0] + 1) / 2 * (w - 1), (grid[..., 1] + 1) / 2 * (h - 1)
        sx, sy = (w - 1) / 2, (h - 1) / 2
    else:
        ix, iy = ((grid[..., 0] + 1) * w - 1) / 2, ((grid[..., 1] + 1) * h - 1) / 2
        sx, sy = w / 2, h / 2
    ix, iy = ix.clamp(-2, w + 1), iy.clamp(-2, h + 1)  # every tap of a clamped position stays outside
    x0, y0 = torch.floor(ix), torch.floor(iy)
    fx, fy = ix - x0, iy - y0
    x0, y0 = x0.long(), y0.long()
    taps = []
    for dy, dx in TAPS:
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy) * inside
        taps.append((yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1), inside, weight))
    return taps, (fx, fy, sx, sy)


def gradients(grad, x, grid, features, align_corners):
    """(dx, dgrid, dfeatures, dbias) by the formulas of the module docstring, in the accumulation dtype and
    differentiable to any order; dx is a deterministic scatter (serial ``index_add`` on CPU, sort-based
    ``index_put(accumulate=True)`` on CUDA). Holds (B,C,N) tensors: the reference formula, not a fused kernel."""
    acc = _accumulation(x.dtype)
    b, c, h, w = x.shape
    n = features.shape[1]
    gy, xs, f, g = grad.to(acc), x.to(acc).reshape(b, c, h * w), features.to(acc), grid.to(acc)
    taps, (fx, fy, sx, sy) = bilinear_taps(g, h, w, align_corners)
    values, sums = [], []
    for index, inside, _ in taps:
        picked = (xs.index_select(2, index) if g.dim() == 2
                  else xs.gather(2, index[:, None, :].expand(b, c, n))) * inside.to(acc)[..., None, :]
        values.append(picked)
        sums.append(torch.einsum("bcn,cn->bn", picked, f))
    s00, s01, s10, s11 = sums
    dgx = ((1 - fy) * (s01 - s00) + fy * (s11 - s10)) * gy * sx
    dgy = ((1 - fx) * (s10 - s00) + fx * (s11 - s01)) * gy * sy
    dgrid = torch.stack([dgx, dgy], -1)
    if g.dim() == 2:
        dgrid = dgrid.sum(0)
    sampled = sum(weight[..., None, :] * v for (_, _, weight), v in zip(taps, values))
    dfeatures = torch.einsum("bn,bcn->cn", gy, sampled)
    first_row = torch.arange(b, device=x.device)[:, None] * (h * w)
    rows = torch.cat([(first_row + index).expand(b, n).reshape(-1) for index, _, _ in taps])
    contributions = torch.cat([((gy * weight)[..., None] * f.t()).reshape(b * n, c) for _, _, weight in taps])
    dx = _scatter_rows(b * h * w, rows, contributions).view(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)
    return dx, dgrid, dfeatures, gy.sum(0)


def _scatter_rows(rows_out: int, rows: Tensor, values: Tensor) -> Tensor:
    """``out[rows[i]] += values[i]`` into a zero (rows_out, C) tensor, in a fixed order, differentiably."""
    out = values.new_zeros((rows_out, values.shape[1]))
    if values.device.type == "cpu":
        return out.index_add(0, rows, values)  # serial on CPU
    return out.index_put((rows,), values, accumulate=True)  # sorts the rows on CUDA


def _ext_forward(x, grid, features, bias, align_corners):
    _build.load_extension(OP.name)  # a no-op once loaded; needed when the custom op is called directly
    return torch.ops.daenr_fast_ext.gaussian_readout_forward(x, grid, features, bias, align_corners)


def _ext_backward(grad, x, grid, features, align_corners):
    _build.load_extension(OP.name)
    return torch.ops.daenr_fast_ext.gaussian_readout_backward(grad.contiguous(), x, grid, features, align_corners)


def _triton_forward(x, grid, features, bias, align_corners):
    from daenr_fast.kernels import gaussian_readout as kernel

    return kernel.forward(x, grid, features, bias, align_corners)


def _triton_backward(grad, x, grid, features, align_corners):
    from daenr_fast.kernels import gaussian_readout as kernel

    return kernel.backward(grad.contiguous(), x, grid, features, align_corners)


# ----------------------------------------------------------------------------------------------- autograd

def _fake(x, grid, features, bias, align_corners):
    return x.new_empty((x.shape[0], features.shape[1]))


def _backward_fake(grad, x, grid, features, align_corners):
    return (torch.empty_like(x), torch.empty_like(grid), torch.empty_like(features),
            features.new_empty((features.shape[1],)))


def _setup_context(ctx, inputs, output):
    x, grid, features, bias, align_corners, backend = inputs
    ctx.save_for_backward(x, grid, features)
    ctx.align_corners = align_corners
    ctx.backend = backend
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, grid, features = ctx.saved_tensors
    if torch.is_grad_enabled():  # building a graph of the gradients: the differentiable formula
        gx, gg, gf, gb = (g.to(x.dtype) for g in gradients(grad, x, grid, features, ctx.align_corners))
    else:
        gx, gg, gf, gb = OP.run_backward(grad, x, grid, features, ctx.align_corners, ctx.backend)
    return gx, gg, gf, (gb if ctx.has_bias else None), None, None


def _vmap(info, in_dims, x, grid, features, bias, align_corners, backend):
    """Stacked inputs (x, and a per-batch grid) under shared readout parameters fold into the batch dimension;
    stacked parameters run one call per entry."""
    x_dim, grid_dim, features_dim, bias_dim = in_dims[:4]
    size = info.batch_size
    shared = grid.dim() - (grid_dim is not None) == 2
    if x_dim is not None and features_dim is None and bias_dim is None and not (shared and grid_dim is not None):
        xs = x.movedim(x_dim, 0)
        b = xs.shape[1]
        if not shared:
            grid = grid.movedim(grid_dim, 0) if grid_dim is not None else grid.expand(size, *grid.shape)
            grid = grid.reshape(size * b, *grid.shape[2:]).contiguous()
        y = OP.custom_op(xs.reshape(size * b, *xs.shape[2:]).contiguous(), grid, features, bias, align_corners,
                         backend)
        return y.view(size, b, -1), 0

    def entry(t, dim, i):
        return None if t is None else (t.select(dim, i) if dim is not None else t).contiguous()

    out = [OP.custom_op(entry(x, x_dim, i), entry(grid, grid_dim, i), entry(features, features_dim, i),
                        entry(bias, bias_dim, i), align_corners, backend) for i in range(size)]
    return torch.stack(out), 0


OP = define(OpDef(
    name="gaussian_readout",
    schema="(Tensor x, Tensor grid, Tensor features, Tensor? bias, bool align_corners, str backend) -> Tensor",
    kernels={"torch": _torch_forward, "cpu": _ext_forward, "cuda": _ext_forward, "triton": _triton_forward},
    dtypes=STANDARD_DTYPES,
    fake=_fake,
    setup_context=_setup_context,
    backward=_backward,
    vmap=_vmap,
    backward_schema="(Tensor grad, Tensor x, Tensor grid, Tensor features, bool align_corners, str backend)"
                    " -> (Tensor, Tensor, Tensor, Tensor)",
    backward_kernels={name: gradients_like_first_input(k) for name, k in
                      {"torch": _torch_backward, "cpu": _ext_backward, "cuda": _ext_backward,
                       "triton": _triton_backward}.items()},
    backward_fake=_backward_fake,
))
