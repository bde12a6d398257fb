"""poisson_loss on a CUDA GPU: the cuda and triton backends against a float64 truth, forward and gradient, every
activation and reduction, float32 / float16 / bfloat16, empty and non-contiguous inputs, the fused target check,
determinism. Skipped without a GPU.

Tolerances, max |error| / max(1, max |float64 truth|): float32 2e-5 (fast-math exp/log, float32 partial sums
finished in double), float16 2e-3 and bfloat16 1.6e-2 (one rounding of the result; float32 math inside). A float16 result whose
truth is past 65504 must be the infinity that rounding the truth gives, as it is for torch's own float16 sums.
Run in a pytest process without ``TRITON_INTERPRET=1``; the triton cases skip themselves when it is set.
"""
import os

import pytest
import torch

from daenr_fast.ops import poisson_loss, reference
from daenr_fast.ops.poisson_loss import ACTIVATIONS

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
REDUCTIONS = [("mean", False), ("sum", False), ("none", False), ("mean", True), ("sum", True)]


def gpu_backends():
    names = ["cuda"]
    if os.environ.get("TRITON_INTERPRET") != "1":
        names.append("triton")
    return names


def make_inputs(shape, activation, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    if activation == "identity":
        z = z.abs() + 0.05
    s = torch.poisson(reference.poisson_rate(z, activation).clamp(max=50), generator=g)
    return z.to(dtype).cuda(), s.to(dtype).cuda()


def loss_and_grad(fn, z, s, upstream_dtype=None):
    """(loss, dloss/dz) with the upstream gradient 0.5 + U[0,1) rounded to ``upstream_dtype`` (default: z's)."""
    zz = z.clone().requires_grad_()
    loss = fn(zz, s)
    g = torch.rand(loss.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    g = g.to(upstream_dtype or z.dtype)
    loss.backward(g.to(device=loss.device, dtype=loss.dtype))
    return loss.detach(), zz.grad


def assert_scaled_close(got, want, rel):
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    torch.testing.assert_close(got.double(), want.double(), rtol=rel, atol=rel * scale, equal_nan=True)


def assert_matches_truth(got, truth, rel):
    """``got`` (float32/16/bf16) against the float64 ``truth``. Where the truth is past the range of got's dtype
    (a float16 sum above 65504), the result must be the infinity that rounding the truth gives; the rest is
    compared with :func:`assert_scaled_close`."""
    rounded = truth.to(got.dtype)
    beyond = torch.isinf(rounded) & torch.isfinite(truth)
    torch.testing.assert_close(got[beyond], rounded[beyond], rtol=0, atol=0)
    assert_scaled_close(got[~beyond], truth[~beyond], rel)


@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("dtype", list(REL), ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("reduction,per_neuron", REDUCTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", [(1, 1), (64, 103), (256, 8000), (3, 5, 7)], ids=lambda s: "x".join(map(str, s)))
def test_matches_float64_truth(backend, dtype, activation, reduction, per_neuron, shape):
    z, s = make_inputs(shape, activation, dtype)
    opts = dict(activation=activation, reduction=reduction, per_neuron=per_neuron, full=shape == (64, 103))
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a, b, **opts), z.double(), s.double(), dtype)
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, backend=backend, **opts), z, s)
    assert loss.dtype == grad.dtype == dtype and loss.shape == l_ref.shape
    assert_matches_truth(loss, l_ref, REL[dtype])
    assert_matches_truth(grad, g_ref, REL[dtype])


@pytest.mark.parametrize("backend", gpu_backends())
def test_empty_and_non_contiguous_inputs(backend):
    z, s = make_inputs((0, 7), "elu1", torch.float32)
    for reduction, per_neuron in REDUCTIONS:
        opts = dict(activation="elu1", reduction=reduction, per_neuron=per_neuron)
        assert_scaled_close(poisson_loss(z, s, backend=backend, **opts), reference.poisson_loss(z, s, **opts), 0)
    z, s = make_inputs((70, 90), "softplus", torch.float32)
    opts = dict(activation="softplus", per_neuron=True)
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a.double(), b.double(), **opts), z.t(), s.t())
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, backend=backend, **opts), z.t(), s.t())
    assert_scaled_close(loss, l_ref, 2e-5)
    assert_scaled_close(grad, g_ref, 2e-5)


@pytest.mark.parametrize("backend", gpu_backends())
def test_invalid_targets_are_reported(backend):
    z, s = make_inputs((300, 500), "elu1", torch.float32)
    s[120, 7], s[299, 0] = -1.0, float("nan")
    with pytest.raises(ValueError, match=r"2 negative or non-finite entries, the first at index \(120, 7\)"):
        poisson_loss(z, s, activation="elu1", backend=backend)


@pytest.mark.parametrize("backend", gpu_backends())
def test_deterministic(backend):
    z, s = make_inputs((512, 3000), "elu1", torch.float32)
    runs = [poisson_loss(z, s, activation="elu1", per_neuron=per_neuron, backend=backend)
            for per_neuron in (False, True) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[2], runs[3])
