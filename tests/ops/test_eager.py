"""Eager calls run the ops' autograd.Function; compile, fake tensors, torch.func transforms and tensor subclasses
run the registered custom op. Both paths give the same values and gradients."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from daenr_fast.ops import factorized_readout, poisson_loss, vq_lookup
from daenr_fast.ops._eager import tracing


class Tagged(torch.Tensor):
    """A tensor subclass with the default __torch_function__ (so the custom op path is taken)."""


def readout_inputs():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()
            for shape in ((3, 4, 5, 6), (7, 5, 6), (7, 4), (7,))]


def test_tracing_is_false_for_plain_tensors_and_parameters():
    assert not tracing(torch.zeros(2), torch.nn.Parameter(torch.zeros(2)), None)


def test_tracing_is_true_under_fake_tensors_functorch_and_subclasses():
    assert tracing(torch.zeros(2).as_subclass(Tagged))
    with FakeTensorMode():
        assert tracing()
    seen = []
    torch.func.grad(lambda t: (seen.append(tracing(t)), t.sum())[1])(torch.zeros(2))
    assert seen == [True]


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_readout_eager_path_matches_the_custom_op(backend):
    inputs = readout_inputs()
    y = factorized_readout(*inputs, backend=backend)
    assert type(y.grad_fn).__name__ == "ReadoutFunctionBackward"
    grads = torch.autograd.grad(y.square().sum(), inputs)
    tagged = [t.detach().as_subclass(Tagged).requires_grad_() for t in inputs]
    y_op = factorized_readout(*tagged, backend=backend)
    assert "ReadoutFunction" not in type(y_op.grad_fn).__name__
    grads_op = torch.autograd.grad(y_op.square().sum(), tagged)
    torch.testing.assert_close(y_op.as_subclass(torch.Tensor), y.detach(), rtol=0, atol=0)
    for a, b in zip(grads_op, grads):
        torch.testing.assert_close(a.as_subclass(torch.Tensor), b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_poisson_eager_path_matches_the_custom_op(backend):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.poisson(torch.rand(6, 9, generator=g, dtype=torch.float64) * 3)
    loss = poisson_loss(z, s, activation="softplus", reduction="none", backend=backend)
    assert type(loss.grad_fn).__name__ == "PoissonFunctionBackward"
    (grad,) = torch.autograd.grad(loss, z, torch.full_like(loss, 0.5))
    zt = z.detach().as_subclass(Tagged).requires_grad_()
    loss_op = poisson_loss(zt, s.as_subclass(Tagged), activation="softplus", reduction="none", backend=backend)
    assert "PoissonFunction" not in type(loss_op.grad_fn).__name__
    (grad_op,) = torch.autograd.grad(loss_op, zt, torch.full_like(loss_op, 0.5))
    torch.testing.assert_close(loss_op.as_subclass(torch.Tensor), loss.detach(), rtol=0, atol=0)
    torch.testing.assert_close(grad_op.as_subclass(torch.Tensor), grad, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_vq_eager_path_matches_the_custom_op(backend):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(20, 3, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    idx, dist = vq_lookup(z, e, backend=backend)
    assert type(dist.grad_fn).__name__ == "VQFunctionBackward"
    grads = torch.autograd.grad(dist.sum(), (z, e))
    zt, et = (t.detach().as_subclass(Tagged).requires_grad_() for t in (z, e))
    idx_op, dist_op = vq_lookup(zt, et, backend=backend)
    grads_op = torch.autograd.grad(dist_op.sum(), (zt, et))
    assert torch.equal(idx_op.as_subclass(torch.Tensor), idx)
    torch.testing.assert_close(dist_op.as_subclass(torch.Tensor), dist.detach(), rtol=0, atol=0)
    for a, b in zip(grads_op, grads):
        torch.testing.assert_close(a.as_subclass(torch.Tensor), b, rtol=0, atol=0)
