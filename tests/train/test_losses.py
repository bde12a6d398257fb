"""The loss terms under both scalings (per-image sum or mean over pixels / neurons), for one model and a stack."""
import warnings

import pytest
import torch

from daenr_fast.models import build_model
from daenr_fast.train import TrainConfig, get_preset, train
from daenr_fast.train.config import PAPER_SCALING
from daenr_fast.train.losses import loss_terms, reconstruction_loss, response_loss
from daenr_fast.train.presets import ScalingWarning, check_scaling

B, N = 5, 7


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, 8, 8, generator=g) * 2 - 1, torch.rand(B, 1, 8, 8, generator=g) * 2 - 1


def _responses(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, generator=g, dtype=torch.float64), torch.poisson(torch.full((B, N), 2.0), generator=g)


def test_reconstruction_sum_and_mean_over_pixels():
    x_hat, x = _images()
    per_image_sum = torch.stack([((x_hat[b] - x[b]) ** 2).sum() for b in range(B)])
    assert float(reconstruction_loss(x_hat, x, "sum")) == pytest.approx(float(per_image_sum.mean()), rel=1e-6)
    assert float(reconstruction_loss(x_hat, x, "mean")) == pytest.approx(float(per_image_sum.mean()) / 64, rel=1e-6)


@pytest.mark.parametrize("kind,activation", [("poisson", "elu1"), ("poisson", "exp"), ("mse", "identity")])
def test_response_sum_and_mean_over_neurons(kind, activation):
    z, s = _responses()
    rate = torch.nn.functional.elu(z) + 1 if activation == "elu1" else torch.exp(z) if activation == "exp" else z
    per_value = rate - s * torch.log(rate + 1e-8) if kind == "poisson" else (rate - s) ** 2
    expected_sum = float(per_value.sum(1).mean())
    assert float(response_loss(z, s, kind, activation, "sum")) == pytest.approx(expected_sum, rel=1e-7)
    assert float(response_loss(z, s, kind, activation, "mean")) == pytest.approx(expected_sum / N, rel=1e-7)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_a_stack_of_models_gets_one_value_each(reduction):
    """Leading dimensions (G models) are kept: each entry equals the single-model loss."""
    zs = torch.randn(3, B, N, dtype=torch.float64)
    s = torch.poisson(torch.full((3, B, N), 1.5)).double()
    stacked = response_loss(zs, s, "poisson", "elu1", reduction)
    assert stacked.shape == (3,)
    for g in range(3):
        assert float(stacked[g]) == pytest.approx(float(response_loss(zs[g], s[g], "poisson", "elu1", reduction)))
    x_hat, x = torch.rand(3, B, 1, 4, 4), torch.rand(3, B, 1, 4, 4)
    recon = reconstruction_loss(x_hat, x, reduction)
    assert recon.shape == (3,)
    assert float(recon[1]) == pytest.approx(float(reconstruction_loss(x_hat[1], x[1], reduction)))


def test_unknown_reduction_lists_the_valid_ones():
    x_hat, x = _images()
    z, s = _responses()
    with pytest.raises(ValueError, match="recon_reduction must be one of sum, mean, got 'avg'"):
        reconstruction_loss(x_hat, x, "avg")
    with pytest.raises(ValueError, match="response_reduction must be one of sum, mean, got 'none'"):
        response_loss(z, s, reduction="none")
    for name in ("recon_reduction", "response_reduction"):
        with pytest.raises(ValueError, match=f"{name} must be one of sum, mean, got 'Mean'"):
            TrainConfig(**{name: "Mean"}).validate()


def test_loss_terms_follow_the_config_scaling():
    """total = alpha * reconstruction + beta * response, each term under the config's reductions; the pixel
    mean is the pixel sum / (32*32) and the neuron mean the neuron sum / n."""
    torch.manual_seed(0)
    model = build_model("cae-fr", layer=2, n_neurons=N).eval()
    x = torch.rand(B, 1, 32, 32) * 2 - 1
    s = torch.poisson(torch.full((B, N), 2.0))
    with torch.no_grad():
        out = model(x)
    found = {}
    for scaling in [("sum", "sum"), ("mean", "sum"), ("mean", "mean"), ("sum", "mean")]:
        cfg = TrainConfig(alpha=0.5, beta=2.0, readout_reg=0.0, recon_reduction=scaling[0],
                          response_reduction=scaling[1])
        with torch.no_grad():
            total, terms = loss_terms(model, out, x, s, cfg)
        assert float(total) == pytest.approx(0.5 * float(terms["reconstruction"]) + 2.0 * float(terms["response"]))
        found[scaling] = terms
    assert float(found["sum", "sum"]["reconstruction"]) == pytest.approx(
        1024 * float(found["mean", "sum"]["reconstruction"]), rel=1e-5)
    assert float(found["mean", "sum"]["response"]) == pytest.approx(N * float(found["mean", "mean"]["response"]),
                                                                    rel=1e-5)


def test_defaults_and_presets_use_the_paper_scaling():
    cfg = TrainConfig()
    assert (cfg.recon_reduction, cfg.response_reduction) == PAPER_SCALING == ("mean", "sum")
    assert get_preset("table8:region3:cae-fr2").scaling == PAPER_SCALING
    assert get_preset("table13:region3:vq-vae-fm4").scaling == PAPER_SCALING


def test_a_preset_under_another_scaling_warns_once(tiny_splits):
    preset = "table8:region3:cae-fr2"
    cfg = TrainConfig(model="cae-fr", layer=3, alpha=1.0, beta=1e-3, preset=preset, recon_reduction="sum",
                      batch_size=8, eval_every=2, max_steps=2, progress=False, figures=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, tiny_splits)
    scaling = [w for w in caught if issubclass(w.category, ScalingWarning)]
    assert len(scaling) == 1
    assert "table8:region3:cae-fr2 assumes recon_reduction='mean'" in str(scaling[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScalingWarning)
        assert check_scaling(preset, *PAPER_SCALING) and check_scaling(None, "sum", "sum")
