"""poisson_loss, triton backend on CPU under TRITON_INTERPRET=1: forward and gradient against the reference for
every activation and reduction, the Stirling term, float16, and the fused target check. Small shapes (the
interpreter is slow)."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # before anything imports daenr_fast.kernels

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from daenr_fast.ops import poisson_loss, reference  # noqa: E402
from daenr_fast.ops.poisson_loss import ACTIVATIONS  # noqa: E402

pytestmark = pytest.mark.triton

REDUCTIONS = [("mean", False), ("sum", False), ("none", False), ("mean", True)]


def make_inputs(shape, activation, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    if activation == "identity":
        z = z.abs() + 0.05
    s = torch.poisson(reference.poisson_rate(z, activation).clamp(max=50), generator=g)
    return z.to(dtype), s.to(dtype)


def loss_and_grad(fn, z, s):
    zz = z.clone().requires_grad_()
    loss = fn(zz, s)
    g = torch.rand(loss.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    loss.backward(g.to(loss.dtype))
    return loss.detach(), zz.grad


def assert_scaled_close(got, want, rel):
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got.double(), want.double(), rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("reduction,per_neuron", REDUCTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", [(1, 1), (19, 70)], ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_forward_and_grad(activation, reduction, per_neuron, shape):
    z, s = make_inputs(shape, activation)
    opts = dict(activation=activation, reduction=reduction, per_neuron=per_neuron)
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a.double(), b.double(), **opts), z, s)
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, backend="triton", **opts), z, s)
    assert loss.shape == l_ref.shape and loss.dtype == z.dtype
    assert_scaled_close(loss, l_ref, 2e-5)
    assert_scaled_close(grad, g_ref, 2e-5)


@pytest.mark.parametrize("activation", ["elu1", "exp"])
def test_full_loss_per_neuron(activation):
    z, s = make_inputs((21, 9), activation, seed=2)
    opts = dict(activation=activation, reduction="sum", per_neuron=True, full=True)
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a.double(), b.double(), **opts), z, s)
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, backend="triton", **opts), z, s)
    assert_scaled_close(loss, l_ref, 2e-5)
    assert_scaled_close(grad, g_ref, 2e-5)


def test_empty_input_gives_the_reference_values():
    z, s = make_inputs((0, 4), "elu1")
    for reduction, per_neuron in REDUCTIONS:
        opts = dict(activation="elu1", reduction=reduction, per_neuron=per_neuron)
        torch.testing.assert_close(poisson_loss(z, s, backend="triton", **opts), reference.poisson_loss(z, s, **opts),
                                   equal_nan=True)


def test_float16_accumulates_in_float32():
    z, s = make_inputs((17, 40), "softplus", dtype=torch.float16, seed=3)
    opts = dict(activation="softplus", reduction="mean")
    l_ref, g_ref = loss_and_grad(lambda a, b: reference.poisson_loss(a.double(), b.double(), **opts), z, s)
    loss, grad = loss_and_grad(lambda a, b: poisson_loss(a, b, backend="triton", **opts), z, s)
    assert loss.dtype == grad.dtype == torch.float16
    assert_scaled_close(loss, l_ref, 2e-3)
    assert_scaled_close(grad, g_ref, 2e-3)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_float16_gradient_is_rounded_once_after_the_upstream_scale(backend):
    """exp(z) - s = exp(11.5) is past float16's 65504; times the upstream 0.25 it is not, and that is what comes back
    (the saved gradient is float32; a float16 one would already be infinite). The torch backend is checked here too,
    beside the kernel it mirrors."""
    z = torch.tensor([[11.5, 0.5]], dtype=torch.float16, requires_grad=True)
    s = torch.tensor([[2.0, 1.0]], dtype=torch.float16)
    loss = poisson_loss(z, s, activation="exp", reduction="none", backend=backend)
    (grad,) = torch.autograd.grad(loss, z, torch.full_like(loss, 0.25))
    want = (torch.exp(z.detach().double()) - s.double()) * 0.25
    assert grad.dtype == torch.float16 and torch.isinf(loss[0, 0]) and torch.isfinite(grad).all()
    torch.testing.assert_close(grad.double(), want.to(torch.float16).double(), rtol=1e-3, atol=0)


def test_invalid_targets_are_counted_in_the_kernel():
    z, s = make_inputs((5, 300), "elu1")
    s[1, 299], s[4, 7], s[3, 3] = -1.0, float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"3 negative or non-finite entries, the first at index \(1, 299\)"):
        poisson_loss(z, s, activation="elu1", backend="triton")
