"""Fuzzing gaussian_readout: every backend here against the float64 reference, forward and every gradient.

Drawn: the dtype (each backend's list), B, C, N (0 and 1 often), H, W >= 1 (1 often), a per-batch (B,N,2) or
shared (N,2) grid, align_corners, bias or none, validate on or off, which inputs need a gradient, the layouts of
every input and of the upstream gradient (permuted, stepped, expanded), magnitudes and special entries of x,
features and bias as for factorized_readout, and positions: inside the map, just outside it (zero padding), far
outside, on pixel centres and corners exactly, plus special entries (0, +-1, subnormal, huge finite values).

Tolerance. Positions are computed in the accumulation dtype: ix is off by at most
dix = 4 u(acc) (1 + |gx|) (W + 1) (diy alike), and the bilinear sample is continuous with slope at most twice the
largest |x| of the map, so with Sx = sum_c |f[c,n]| max_p |x[b,c,p]| per (b, n):

    y:         (4 C + 2) u(acc) S + 2 Sx (dix + diy)              S: the reference at |x|, |features|, |bias|
    dx:        (4 N + 2) u(acc) Sdx + 4 sum_n |dy| |f| (dix + diy)  Sdx: its x-gradient for |dy|
    dfeatures: (4 B + 2) u(acc) Sdf + 2 sum_b |dy| max|x| (dix + diy)
    dbias:     (B + 2) u(acc) sum_b |dy|
    dgrid:     (4 C + 4) u(acc) T + T (dix + diy),  T = 4 |dy| s Sx, s = (W - 1)/2 or W/2 (H for y)

(summed over the batch for a shared grid), plus the floor (n + 2) tiny(acc) P as for factorized_readout and one
rounding to the output dtype (a whole ulp for bfloat16 under the Triton interpreter, which truncates). dgrid is
discontinuous where ix (iy) crosses an integer (grid_sample takes the one-sided derivative of floor): the
derivative of either side is accepted, the reference's gradient at the grid shifted by +-2 dix in the position's
units. Two runs agree bitwise.
"""
import math

import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import given, strategies as st  # noqa: E402

from daenr_fast.ops import OPS, reference  # noqa: E402

from .bounds import F64, acc_dtype, assert_close, tiny, u  # noqa: E402
from .inputs import (Arg, Layout, assert_repeatable, backend_params, dims, draw_arg, examples,  # noqa: E402
                     fuzz_dtypes, interpreted, require, run, values)

OP = "gaussian_readout"
pytestmark = [pytest.mark.fuzz,
              pytest.mark.skipif(OP not in OPS, reason="gaussian_readout is not a registered op here")]
NAMES = ("y", "x", "grid", "features", "bias")
#: (max B, C, H, W, N) for compiled backends and for the Triton interpreter.
SIZES = {False: (6, 6, 9, 9, 12), True: (3, 3, 5, 5, 5)}
LOG10_RANGE = {torch.float16: (-6, 0), torch.bfloat16: (-12, 6), torch.float32: (-12, 6), torch.float64: (-40, 40)}
POSITIONS = ("inside", "border", "far", "centres")


GRID_SPECIALS = (0.0, 1.0, -1.0, 1e-40, 1e30, -1e30)


def positions(kind: str, size: int, align_corners: bool, specials):
    """float64 -> float64 map from uniform [0, 1) draws to grid coordinates of ``kind`` along a side of ``size``,
    then ``specials`` as (place in [0, 1) of the flattened grid, value)."""
    def to_grid(r):
        if kind == "inside":
            g = 2 * r - 1
        elif kind == "border":
            g = 2.4 * r - 1.2
        elif kind == "far":
            g = 40 * r - 20
        else:  # pixel centres, exactly in float64
            pixel = (r * size).floor()
            g = 2 * pixel / max(size - 1, 1) - 1 if align_corners else (2 * pixel + 1) / size - 1
        flat = g.reshape(-1)
        for where, value in specials:
            if flat.numel():
                flat[int(where * flat.numel())] = value
        return g
    return to_grid


def check(device, backend, data):
    require(OP, backend, device)
    from daenr_fast.ops import gaussian_readout

    draw = data.draw
    dtype = draw(st.sampled_from(fuzz_dtypes(OP, backend, device)), label="dtype")
    max_b, max_c, max_h, max_w, max_n = SIZES[interpreted(backend, device)]
    B, C, N = draw(dims(max_b), label="B"), draw(dims(max_c), label="C"), draw(dims(max_n), label="N")
    H, W = (draw(st.one_of(st.just(1), st.integers(2, hi)), label=n) for n, hi in (("H", max_h), ("W", max_w)))
    shared = draw(st.booleans(), label="shared grid")
    align = draw(st.booleans(), label="align_corners")
    has_bias = draw(st.booleans(), label="bias")
    validate = draw(st.booleans(), label="validate")
    lo_k, hi_k = LOG10_RANGE[dtype]

    def tensor_arg(name, shape):
        k = draw(st.integers(lo_k, hi_k), label=f"log10 |{name}|")
        spec = draw(values(log10_scale=(k, k)), label=f"{name} values")
        return draw_arg(draw, shape, dtype, spec, large=min(10.0 ** (k + 6), torch.finfo(dtype).max))

    x = tensor_arg("x", (B, C, H, W))
    kind = draw(st.sampled_from(POSITIONS), label="positions")
    spec = draw(values(kinds=("uniform",), log10_scale=(0, 0), specials=False), label="grid values")
    specials = draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(GRID_SPECIALS)),
                             max_size=3), label="grid specials")
    grid = draw_arg(draw, (N, 2) if shared else (B, N, 2), dtype, spec, large=1.0,
                    transform=positions(kind, max(H, W), align, specials))
    features = tensor_arg("features", (C, N))
    bias = tensor_arg("bias", (N,)) if has_bias else None
    args = [x, grid, features, bias]
    needs = [a is not None and draw(st.booleans(), label=f"{n} needs grad") for n, a in zip(NAMES[1:], args)]
    upstream = draw_arg(draw, (B, N), dtype, draw(values(log10_scale=(-3, 3)), label="upstream values"), large=1e3)

    op = lambda *a: gaussian_readout(*a, align_corners=align, validate=validate, backend=backend)  # noqa: E731
    ref = lambda *a: reference.gaussian_readout(*a, align_corners=align)  # noqa: E731
    got = run(op, args, needs, upstream, device=device)
    assert_repeatable(got, run(op, args, needs, upstream, device=device))
    (y, grads), (y_ref, grads_ref) = got, run(ref, args, needs, upstream, float64=True)
    assert y.dtype == dtype and tuple(y.shape) == (B, N)

    acc = acc_dtype(dtype)
    v = [None if a is None else a.view(False, float64=True).detach() for a in args]
    dy = upstream.view(False, float64=True).abs()
    g = v[1].expand(B, N, 2)
    scale = torch.tensor([(W - 1) / 2 if align else W / 2, (H - 1) / 2 if align else H / 2], dtype=F64)
    size = torch.tensor([W + 1, H + 1], dtype=F64)
    shift = 4 * u(acc) * (1 + g.abs()) * size  # dix, diy per (b, n)
    moved = shift[..., 0] + shift[..., 1]
    xmax = v[0].abs().amax((2, 3)) if H * W else v[0].new_zeros((B, C))
    sx = xmax @ v[2].abs()  # (B,N)
    absolute = [None if t is None else t.abs().requires_grad_(n) for t, n in zip(v, needs)]
    absolute[1] = v[1].clone().requires_grad_(False)
    s_y = reference.gaussian_readout(*absolute, align_corners=align)
    wanted = [t for t, n, i in zip(absolute, needs, range(4)) if n and i != 1]
    sums = iter(torch.autograd.grad(s_y, wanted, dy) if wanted else ())
    s_grads = [next(sums) if n and i != 1 else None for i, n in enumerate(needs)]
    big = math.prod(max(1.0, t.abs().max().item() if t.numel() else 0.0) for t in (v[0], v[2], dy)) \
        * float(scale.max().clamp(min=1))
    floor = lambda n: (n + 2) * tiny(acc) * big  # noqa: E731

    bounds = {"y": (4 * C + 2) * u(acc) * s_y.detach() + 2 * sx * moved + floor(4 * C)}
    if needs[0]:
        spread = (dy * moved)[:, :, None] * v[2].abs().t()[None]  # (B,N,C): |dy| |f| (dix + diy)
        bounds["x"] = (4 * N + 2) * u(acc) * s_grads[0] + 4 * spread.sum(1)[:, :, None, None] + floor(4 * N)
    if needs[2]:
        bounds["features"] = ((4 * B + 2) * u(acc) * s_grads[2]
                              + 2 * torch.einsum("bn,bc->cn", dy * moved, xmax) + floor(4 * B))
    if needs[3]:
        bounds["bias"] = (B + 2) * u(acc) * dy.sum(0) + floor(B)
    alternatives = ()
    if needs[1]:
        t = 4 * dy[..., None] * scale * sx[..., None]  # (B,N,2)
        tol = (4 * C + 4) * u(acc) * t + t * moved[..., None] + floor(4 * C)
        if shared:
            tol = tol.sum(0)
        bounds["grid"] = tol
        step = 2 * shift / scale.clamp(min=0.5)  # 2 dix in grid units
        if shared:
            step = step.amax(0) if B else step.new_zeros((N, 2))
        moved_grids = [Arg(v[1] + sign * step, Layout.dense(v[1].dim()), tuple(v[1].shape)) for sign in (1, -1)]
        alternatives = tuple(run(ref, [x, m, features, bias], needs, upstream, float64=True)[1][1]
                             for m in moved_grids)

    truncated = interpreted(backend, device) and dtype == torch.bfloat16
    for name, got_t, want in zip(NAMES, [y] + grads, [y_ref] + grads_ref):
        if want is None:
            assert got_t is None, name
            continue
        assert got_t.dtype == dtype, name
        assert_close(f"{backend} {name}", got_t, want, bounds[name], dtype, truncated=truncated,
                     alternatives=alternatives if name == "grid" else ())


@pytest.mark.parametrize("device,backend", backend_params(OP, interpreter=False) if OP in OPS else [])
@examples()
@given(data=st.data())
def test_matches_reference(device, backend, data):
    check(device, backend, data)


@pytest.mark.parametrize("device,backend", backend_params(OP, interpreter=True) if OP in OPS else [])
@examples(0.5)
@given(data=st.data())
def test_matches_reference_interpreted(device, backend, data):
    check(device, backend, data)
