"""poisson_loss input rules that need the data or the dtype: negative identity rates, an eps the dtype cannot hold,
per-neuron reductions over empty shapes (the same on every backend)."""
import pytest
import torch

from daenr_fast.ops import poisson_loss

BACKENDS = ["torch", "cpu"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_negative_identity_rate_is_a_value_error_naming_z_and_the_first_index(backend):
    z = torch.tensor([[0.5, 1.0], [2.0, -0.25]])
    with pytest.raises(ValueError, match=r"z must hold rates >= 0 .* 1 negative entry, the first at index \(1, 1\)"):
        poisson_loss(z, torch.ones(2, 2), backend=backend)
    assert torch.isnan(poisson_loss(z, torch.ones(2, 2), validate=False, reduction="none", backend=backend)).any()


@pytest.mark.parametrize("activation", ["elu1", "softplus", "exp"])
def test_negative_outputs_are_fine_for_activations_that_make_them_rates(activation):
    z = torch.tensor([[-3.0, 1.0]])
    assert torch.isfinite(poisson_loss(z, torch.ones(1, 2), activation=activation))


@pytest.mark.parametrize("dtype,eps", [(torch.float32, 1e40), (torch.float16, 1e5), (torch.bfloat16, 1e39)])
def test_an_eps_that_overflows_the_dtype_is_a_value_error(dtype, eps):
    z = torch.ones(3, 4, dtype=dtype)
    with pytest.raises(ValueError, match=r"eps must be representable in z's dtype"):
        poisson_loss(z, z, eps=eps)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(3, 0), (0, 4), (0,), (2, 0, 0)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_per_neuron_over_empty_shapes_agrees_across_backends(backend, shape, reduction):
    z = torch.rand(shape, requires_grad=True)
    loss = poisson_loss(z, z.detach(), per_neuron=True, reduction=reduction, backend=backend)
    assert loss.shape == (shape[-1],)
    want = torch.full((shape[-1],), float("nan") if reduction == "mean" else 0.0)
    torch.testing.assert_close(loss.detach(), want, equal_nan=True)
    loss.sum().backward()
    assert z.grad.shape == shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_float32_total_past_the_range_is_inf_like_torch_sums(backend):
    z = torch.tensor([3e38, 3e38])
    assert poisson_loss(z, torch.zeros(2), reduction="sum", backend=backend).item() == float("inf")
