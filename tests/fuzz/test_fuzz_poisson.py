"""Fuzzing poisson_loss: every backend here against the float64 reference, the loss and its gradient, over every
activation x reduction (mean, sum, none; per_neuron) x full combination.

Drawn: the dtype (each backend's list), z of rank 0 to 3 (dimensions 0 and 1 often), eps, validate on or off,
rates act(z) over many decades (10^k: k in [-30, 6] or, one time in two, up to the dtype's largest power of ten,
its top two often; down to 10^-300 in float64) with special entries (rate 0, the smallest normal and a subnormal,
large rates) and special z (0, +-1, the softplus threshold 20, -80), targets
(counts or non-integer rates: 0, 1, small integers, large counts up to 10^6 or the dtype's largest value) of any
real dtype (z's, float32, float64, int32, int64), the layouts of z, target and the upstream gradient (permuted,
stepped, expanded), whether z needs a gradient.

Tolerance. Per element, with r = act(z), s the target in z's dtype, q = 1 + |z| where the rate comes from an
exponential (exp; elu1 and softplus for z <= 0) and 1 elsewhere, everything in float64:

    loss:  16 u(acc) (q r + |s| (|log(r + eps)| + q r / (r + eps) + 1))          (exp: 16 u(acc) (q e^z + |s z|))
           plus 16 u(acc) (|s log s| + s + |log(2 pi s)| / 2) with full=True, for s > 1
    dl/dz: 16 u(acc) |g| |act'(z)| q (1 + |s| / (r + eps))                       (exp: 16 u(acc) |g| (q e^z + |s|))

g being the upstream gradient times 1/count for a mean: a few roundings of each term, the relative error of the
rate carried through the log. Plus tiny(acc) (1 + s / (r + eps) + |log(r + eps)|) for the loss and
tiny(acc) |g| (1 + (1 + s) / (r + eps)) for dl/dz (exp: tiny(acc) (1 + |z|) and tiny(acc) |g|): what a rate,
slope or subnormal target lost to underflow or flushing carries (sigmoid(-89.5) is 0 in float32). A reduction
over n elements adds the sum of the element bounds and n u(acc) sum |loss| (any summation order). Then one
rounding to the output dtype (bounds.py). An output beyond its range must be the infinity of its sign, a mean
over no elements NaN; nothing is required where an intermediate (the rate, s log(r + eps), a partial sum, the
gradient before the upstream factor) may overflow the accumulation dtype (a float32 sum of two bfloat16 losses
near 3e38 overflows; exp(90.5) overflows float32). Two runs agree bitwise.
"""
import math

import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import given, strategies as st  # noqa: E402

from daenr_fast.ops import poisson_loss, reference  # noqa: E402
from daenr_fast.ops.poisson_codes import ACTIVATION_NAMES  # noqa: E402
from daenr_fast.ops.poisson_loss import REDUCTIONS  # noqa: E402

from .bounds import F64, acc_dtype, assert_close, tiny, u  # noqa: E402
from .inputs import (assert_repeatable, backend_params, dims, draw_arg, examples, fit, fuzz_dtypes,  # noqa: E402
                     interpreted, require, run, values)

pytestmark = pytest.mark.fuzz
OP = "poisson_loss"
C = 16  # roundings per term allowed (module docstring)
#: (max dimension, max elements) for compiled backends and for the Triton interpreter.
SIZES = {False: (24, 2048), True: (12, 96)}
EPS = (None, 1e-12, 1e-6, 1e-3, 0.5, 1e3)  # None: the default
Z_SPECIALS = (0.0, 1.0, -1.0, 20.0, -20.0, -80.0)
TARGET_DTYPES = (None, torch.float32, torch.float64, torch.int32, torch.int64)  # None: z's dtype


def inverse_activation(rate: torch.Tensor, activation: str) -> torch.Tensor:
    """z with act(z) = rate (float64; rate 0 maps to -inf, clamped later to the dtype's range)."""
    if activation == "identity":
        return rate
    if activation == "elu1":
        return torch.where(rate > 1, rate - 1, torch.log(rate))
    if activation == "softplus":  # log(expm1(r)), without overflow for large r
        return torch.where(rate > 20, rate + torch.log1p(-torch.exp(-rate)), torch.log(torch.expm1(rate)))
    return torch.log(rate)


def check(device, backend, data):
    require(OP, backend, device)
    draw = data.draw
    dtype = draw(st.sampled_from(fuzz_dtypes(OP, backend, device)), label="dtype")
    hi, cap = SIZES[interpreted(backend, device)]
    shape = tuple(fit([draw(dims(hi)) for _ in range(draw(st.integers(0, 3), label="rank"))], cap))
    activation = draw(st.sampled_from(ACTIVATION_NAMES), label="activation")
    reduction = draw(st.sampled_from(REDUCTIONS), label="reduction")
    per_neuron = reduction != "none" and len(shape) > 0 and draw(st.booleans(), label="per_neuron")
    full = draw(st.booleans(), label="full")
    eps = draw(st.sampled_from(EPS), label="eps")
    if eps is not None and eps > torch.finfo(dtype).max:
        eps = None
    validate = draw(st.booleans(), label="validate")

    lowest = -300 if dtype == F64 else -30
    highest = int(math.log10(torch.finfo(dtype).max))  # rates near the top of the range: overflowing sums
    usual, top = st.integers(lowest, 6), max(7, highest)
    k = draw(st.one_of(usual, usual, st.integers(7, top), st.integers(top - 1, top)), label="log10 rate")
    rate_spec = draw(values(kinds=("uniform", "constant", "sparse", "log", "normal"), log10_scale=(k, k)),
                     label="rate values")
    z_specials = draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(Z_SPECIALS)),
                               max_size=3), label="z specials")

    def to_z(raw):
        z = inverse_activation(raw.abs(), activation).reshape(-1)
        for where, value in z_specials:
            if z.numel() and (activation != "identity" or value >= 0):
                z[int(where * z.numel())] = value
        return z.view(raw.shape)

    z = draw_arg(draw, shape, dtype, rate_spec, large=1e6, transform=to_z)
    target_dtype = draw(st.sampled_from(TARGET_DTYPES), label="target dtype") or dtype
    counts = target_dtype in (torch.int32, torch.int64) or draw(st.booleans(), label="integer counts")
    s_spec = draw(values(kinds=("uniform", "constant", "sparse", "log", "integers"), log10_scale=(-2, 6)),
                  label="target values")
    s_max = min(torch.finfo(dtype).max, 2.0**31 - 1)

    def to_target(raw):
        s = raw.abs().clamp(max=s_max)
        return s.round() if counts else s

    target = draw_arg(draw, shape, F64, s_spec, large=1e6, transform=to_target, specials_of=dtype)
    target.leaf = target.leaf.to(target_dtype)
    needs = [draw(st.booleans(), label="z needs grad"), False]
    loss_shape = shape if reduction == "none" else ((shape[-1],) if per_neuron else ())
    upstream = draw_arg(draw, loss_shape, dtype, draw(values(log10_scale=(-3, 3)), label="upstream values"),
                        large=1e3)

    options = dict(reduction=reduction, per_neuron=per_neuron, full=full)
    if eps is not None:
        options["eps"] = eps
    op = lambda a, b: poisson_loss(a, b, activation=activation, validate=validate, backend=backend,  # noqa: E731
                                   **options)
    got = run(op, [z, target], needs, upstream, device=device)
    assert_repeatable(got, run(op, [z, target], needs, upstream, device=device))
    ref = lambda a, b: reference.poisson_loss(a, b.to(dtype).double(), activation, **options)  # noqa: E731
    (loss, (grad, _)), (loss_ref, (grad_ref, _)) = got, run(ref, [z, target], needs, upstream, float64=True)
    assert loss.dtype == dtype and tuple(loss.shape) == loss_shape

    z64 = z.view(False, float64=True).detach()
    s64 = target.view(False, float64=True).to(dtype).double()
    acc = acc_dtype(dtype)
    eps64 = 1e-8 if eps is None else eps
    limit = torch.finfo(acc).max / 4
    truncated = interpreted(backend, device) and dtype == torch.bfloat16
    per_element = reference.poisson_loss(z64, s64, activation, eps64, "none", False, full).abs()
    carry, carry_g = underflow_factors(z64, s64, activation, eps64)
    tol = C * u(acc) * loss_magnitude(z64, s64, activation, eps64, full) + tiny(acc) * carry
    size = intermediate_magnitude(z64, s64, activation, eps64, full)
    if reduction != "none":
        groups = (math.prod(shape[:-1]), shape[-1]) if per_neuron else (-1, 1)
        n = math.prod(shape[:-1]) if per_neuron else math.prod(shape)
        tol = tol.reshape(groups).sum(0) + n * u(acc) * per_element.reshape(groups).sum(0)
        tol = (tol / n if reduction == "mean" else tol).reshape(loss_shape)
        size = size.reshape(groups).sum(0).reshape(loss_shape)
    assert_close(f"{backend} {activation} loss", loss, loss_ref, tol, dtype, free=size > limit, truncated=truncated)
    if needs[0]:
        assert grad.dtype == dtype
        count = math.prod(shape[:-1]) if per_neuron else math.prod(shape)
        scale = 1.0 / count if reduction == "mean" and count else 1.0
        g = (upstream.view(False, float64=True).abs() * scale).expand(shape)  # reaches every element it reduces
        size_g = g * grad_magnitude(z64, s64, activation, eps64)
        unscaled = grad_magnitude(z64, s64, activation, eps64) / exp_factor(z64, activation)  # before g
        tol_g = C * u(acc) * size_g + tiny(acc) * g * carry_g
        assert_close(f"{backend} {activation} dl/dz", grad, grad_ref, tol_g, dtype,
                     free=(size_g > limit) | (unscaled > limit), truncated=truncated)


def underflow_factors(z, s, activation, eps):
    """What multiplies a rate, slope or target lost to underflow (or flushed) in the accumulation dtype, in the
    loss and in dl/dz: 1 + s / (r + eps) + |log(r + eps)| and 1 + (1 + s) / (r + eps) (exp: 1 + |z| and 1)."""
    if activation == "exp":
        return 1 + z.abs(), torch.ones_like(z)
    rate = reference.poisson_rate(z, activation) + eps
    return 1 + s / rate + rate.log().abs(), 1 + (1 + s) / rate


def intermediate_magnitude(z, s, activation, eps, full):
    """The largest intermediate values of the loss of each element (their sum for a reduction)."""
    if activation == "exp":
        m = torch.exp(z) + (s * z).abs()
    else:
        r = reference.poisson_rate(z, activation)
        m = r + (s * torch.log(r + eps)).abs()
    return m + (s * s.clamp(min=1).log()).abs() + s if full else m


def exp_factor(z: torch.Tensor, activation: str) -> torch.Tensor:
    """q of the module docstring."""
    from_exp = {"identity": torch.zeros_like(z, dtype=torch.bool), "exp": torch.ones_like(z, dtype=torch.bool)}
    return torch.where(from_exp.get(activation, z <= 0), 1 + z.abs(), torch.ones_like(z))


def loss_magnitude(z, s, activation, eps, full):
    q = exp_factor(z, activation)
    if activation == "exp":
        m = q * torch.exp(z) + (s * z).abs()
    else:
        r = reference.poisson_rate(z, activation)
        m = q * r + s * (torch.log(r + eps).abs() + q * r / (r + eps) + 1)
    if full:
        safe = torch.where(s > 1, s, torch.ones_like(s))
        m = m + torch.where(s > 1, (safe * safe.log()).abs() + safe + 0.5 * (2 * math.pi * safe).log().abs(), 0)
    return m


def grad_magnitude(z, s, activation, eps):
    q = exp_factor(z, activation)
    if activation == "exp":
        return q * torch.exp(z) + s
    r = reference.poisson_rate(z, activation)
    slope = {"identity": torch.ones_like(z), "elu1": torch.where(z > 0, 1, torch.exp(z.clamp(max=0))),
             "softplus": torch.sigmoid(z)}[activation]
    return slope * q * (1 + s / (r + eps))


@pytest.mark.parametrize("device,backend", backend_params(OP, interpreter=False))
@examples(2)
@given(data=st.data())
def test_matches_reference(device, backend, data):
    check(device, backend, data)


@pytest.mark.parametrize("device,backend", backend_params(OP, interpreter=True))
@examples(1)
@given(data=st.data())
def test_matches_reference_interpreted(device, backend, data):
    check(device, backend, data)
