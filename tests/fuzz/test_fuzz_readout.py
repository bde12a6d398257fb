"""Fuzzing factorized_readout: every backend here against the float64 reference, forward and every gradient.

Drawn: the dtype (each backend's list), B, C, H, W, N (0 and 1 often), bias or none, which inputs need a gradient,
the layout of every input and of the upstream gradient (permuted, stepped, expanded), and per tensor a regime,
a magnitude 10^k (k in [-12, 6] for single and bfloat16, [-6, 0] for float16, [-40, 40] for float64, times up
to 10^4 in the "log" regime: large and tiny values, their products within the float32 or float64 range) and
special entries (zeros, the dtype's smallest normal and a subnormal, 10^6 times the tensor's magnitude or the
dtype's largest value).

Tolerance. Each output and gradient is a sum of n products of three or four factors; with S the same sum of
absolute values (the reference's forward and gradients at |inputs| and |upstream|, in float64):

    |got - want| <= (n + 2) u(acc) S + (n + 2) tiny(acc) P + u(out) |want| + tiny(out)

the first term the worst case of any summation order in the accumulation dtype with the products' roundings,
the second what an underflowed partial product can lose (P: the product of max(1, max |factor|) over the
factors), the last two the rounding to the output dtype. n is C*H*W + 1 for y, N for dx, B*C for dspatial,
B*H*W for dfeatures, B for dbias. Outputs beyond the output dtype's range must be infinities of the right sign;
nothing is required where S leaves the accumulation dtype's range. Two runs of a call agree bitwise
(deterministic forward and backward).
"""
import math

import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import given, strategies as st  # noqa: E402

from daenr_fast.ops import factorized_readout, reference  # noqa: E402

from .bounds import acc_dtype, assert_close, tiny, u  # noqa: E402
from .inputs import (assert_repeatable, backend_params, dims, draw_arg, examples, fit, fuzz_dtypes,  # noqa: E402
                     interpreted, require, run, values)

pytestmark = pytest.mark.fuzz
OP = "factorized_readout"
NAMES = ("y", "x", "spatial", "features", "bias")

#: (max B, C, H, W, N, elements of x and of spatial) for compiled backends and for the Triton interpreter.
SIZES = {False: (8, 8, 9, 9, 16, 2048), True: (3, 3, 5, 5, 5, 100)}
#: Range of k in each tensor's magnitude 10^k, per input dtype (their products stay within the float32 range).
LOG10_RANGE = {torch.float16: (-6, 0), torch.bfloat16: (-12, 6), torch.float32: (-12, 6), torch.float64: (-40, 40)}


def check(device, backend, data):
    require(OP, backend, device)
    draw = data.draw
    dtype = draw(st.sampled_from(fuzz_dtypes(OP, backend, device)), label="dtype")
    *hi, cap = SIZES[interpreted(backend, device)]
    B, C, H, W = fit([draw(dims(h)) for h in hi[:4]], cap)
    N = fit([draw(dims(hi[4]))], max(1, cap // max(1, H * W)))[0]
    lo_k, hi_k = LOG10_RANGE[dtype]
    has_bias = draw(st.booleans(), label="bias")
    args = []
    for name, shape in (("x", (B, C, H, W)), ("spatial", (N, H, W)), ("features", (N, C)), ("bias", (N,))):
        if name == "bias" and not has_bias:
            args.append(None)
            continue
        k = draw(st.integers(lo_k, hi_k), label=f"log10 |{name}|")
        spec = draw(values(log10_scale=(k, k)), label=f"{name} values")
        args.append(draw_arg(draw, shape, dtype, spec, large=min(10.0 ** (k + 6), torch.finfo(dtype).max)))
    needs = [a is not None and draw(st.booleans(), label=f"{n} needs grad") for n, a in zip(NAMES[1:], args)]
    spec = draw(values(log10_scale=(-3, 3)), label="upstream values")
    upstream = draw_arg(draw, (B, N), dtype, spec, large=1e3)

    op = lambda *a: factorized_readout(*a, backend=backend)  # noqa: E731
    got = run(op, args, needs, upstream, device=device)
    assert_repeatable(got, run(op, args, needs, upstream, device=device))
    (y, grads), (y_ref, grads_ref) = got, run(reference.factorized_readout, args, needs, upstream, float64=True)
    assert y.dtype == dtype and tuple(y.shape) == (B, N)

    magnitudes = magnitude_bounds(args, needs, upstream)
    counts = (C * H * W + 1, N, B * C, B * H * W, B)
    big = math.prod(max(1.0, a.leaf.abs().max().item() if a.leaf.numel() else 0.0)
                    for a in args[:3] + [upstream])
    acc = acc_dtype(dtype)
    for name, got_t, want, mag, n in zip(NAMES, [y] + grads, [y_ref] + grads_ref, magnitudes, counts):
        if want is None:
            assert got_t is None, name
            continue
        assert got_t.dtype == dtype, name
        tol = (n + 2) * u(acc) * mag + (n + 2) * tiny(acc) * big
        assert_close(f"{backend} {name}", got_t, want, tol, dtype, free=mag > torch.finfo(acc).max / 4)


def magnitude_bounds(args, needs, upstream):
    """S of the module docstring: the reference at |inputs| and its gradients for |upstream|, in float64."""
    absolute = [None if a is None else a.view(False, float64=True).abs().requires_grad_(n)
                for a, n in zip(args, needs)]
    y = reference.factorized_readout(*absolute)
    wanted = [t for t, n in zip(absolute, needs) if n]
    grads = iter(torch.autograd.grad(y, wanted, upstream.view(False, float64=True).abs()) if wanted else ())
    return [y.detach()] + [next(grads) if n else None for n in needs]


@pytest.mark.parametrize("device,backend", backend_params(OP, interpreter=False))
@examples()
@given(data=st.data())
def test_matches_reference(device, backend, data):
    check(device, backend, data)


@pytest.mark.parametrize("device,backend", backend_params(OP, interpreter=True))
@examples()
@given(data=st.data())
def test_matches_reference_interpreted(device, backend, data):
    check(device, backend, data)
