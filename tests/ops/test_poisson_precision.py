"""poisson_loss in float64 on the cpu backend agrees with the float64 reference to a few ulps per element, the
Stirling term of ``full=True`` included (its 2 pi must be a double constant, not a float one)."""
import pytest
import torch

from daenr_fast.ops import poisson_loss, reference
from daenr_fast.ops.poisson_codes import ACTIVATION_NAMES

RTOL = 1e-13  # a float 2 pi puts a relative error of about 1e-8 into every element with target > 1


def inputs(activation: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 z whose rate lies in [0.5, 10] for every activation, and integer targets 2..30 (all > 1)."""
    g = torch.Generator().manual_seed(seed)
    rate = torch.rand((17, 41), generator=g, dtype=torch.float64) * 9.5 + 0.5
    z = {"identity": rate, "elu1": torch.where(rate > 1, rate - 1, rate.log()),
         "softplus": torch.log(torch.expm1(rate)), "exp": rate.log()}[activation]
    target = torch.randint(2, 31, z.shape, generator=g).to(torch.float64)
    return z, target


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_cpu_float64_full_loss_per_element(activation):
    z, target = inputs(activation)
    got = poisson_loss(z, target, activation=activation, reduction="none", full=True, backend="cpu")
    want = reference.poisson_loss(z, target, activation, reduction="none", full=True)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize("reduction,per_neuron", [("sum", False), ("mean", True)])
def test_cpu_float64_full_loss_reduced(reduction, per_neuron):
    z, target = inputs("softplus", seed=1)
    got = poisson_loss(z, target, activation="softplus", reduction=reduction, per_neuron=per_neuron, full=True,
                       backend="cpu")
    want = reference.poisson_loss(z, target, "softplus", reduction=reduction, per_neuron=per_neuron, full=True)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0)
