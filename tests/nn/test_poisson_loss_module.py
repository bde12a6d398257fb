"""nn.PoissonLoss: neuralpredictors' semantics (bias, avg, per_neuron, full_loss), activations, no target gradient,
validation of the constructor."""
import pytest
import torch

from daenr_fast.nn import PoissonLoss
from daenr_fast.ops import reference


def neuralpredictors_poisson_loss(output, target, bias, per_neuron, avg, full_loss):
    """neuralpredictors.measures.PoissonLoss.forward, written out."""
    target = target.detach()
    loss = torch.nn.PoissonNLLLoss(log_input=False, full=full_loss, eps=bias, reduction="none")(output, target)
    if not per_neuron:
        return loss.mean() if avg else loss.sum()
    loss = loss.view(-1, loss.shape[-1])
    return loss.mean(dim=0) if avg else loss.sum(dim=0)


def inputs(shape=(13, 4, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    rate = torch.rand(shape, generator=g, dtype=torch.float64) * 3 + 0.01
    return rate, torch.poisson(rate, generator=g)


@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("avg", [False, True])
@pytest.mark.parametrize("full_loss", [False, True])
def test_matches_neuralpredictors(per_neuron, avg, full_loss):
    rate, s = inputs()
    want = neuralpredictors_poisson_loss(rate, s, 1e-6, per_neuron, avg, full_loss)
    got = PoissonLoss(bias=1e-6, per_neuron=per_neuron, avg=avg, full_loss=full_loss)(rate.float(), s.float())
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-5 * max(1.0, want.abs().max().item()))


def test_defaults_average_over_everything():
    rate, s = inputs()
    torch.testing.assert_close(PoissonLoss()(rate, s), neuralpredictors_poisson_loss(rate, s, 1e-8, False, True,
                                                                                       False))


@pytest.mark.parametrize("activation", ["elu1", "softplus", "exp"])
def test_activation_is_applied_before_the_loss(activation):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(9, 11, generator=g, dtype=torch.float64)
    s = torch.poisson(torch.ones(9, 11, dtype=torch.float64), generator=g)
    want = reference.poisson_loss(z, s, activation, eps=1e-8, reduction="mean")
    got = PoissonLoss(avg=True, activation=activation)(z, s)
    torch.testing.assert_close(got, want)


def test_gradient_reaches_output_only():
    rate, s = inputs()
    out = rate.clone().requires_grad_()
    target = s.clone().requires_grad_()
    PoissonLoss(avg=True)(out, target).backward()
    want = (1 - s / (rate + 1e-8)) / rate.numel()
    torch.testing.assert_close(out.grad, want)
    assert target.grad is None


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        PoissonLoss(activation="relu")


def test_repr_names_the_options():
    assert "per_neuron=True" in repr(PoissonLoss(per_neuron=True))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"bias": -1}, ValueError, "bias must be a finite real number >= 0"),
    ({"bias": float("nan")}, ValueError, "bias must be a finite"),
    ({"bias": "1e-8"}, TypeError, "bias must be a finite real number"),
    ({"avg": "yes"}, TypeError, "avg must be True or False"),
    ({"per_neuron": 1}, TypeError, "per_neuron must be True or False"),
    ({"full_loss": None}, TypeError, "full_loss must be True or False"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        PoissonLoss(**kwargs)


def test_non_finite_loss_is_refused_unless_validate_is_false():
    rate, s = inputs()
    rate[0, 0, 0], s[0, 0, 0] = 0.0, 2.0  # log(0 + bias) with bias=0
    with pytest.raises(ValueError, match="not finite"):
        PoissonLoss(bias=0.0)(rate, s)
    assert PoissonLoss(bias=0.0, validate=False)(rate, s).isinf()
