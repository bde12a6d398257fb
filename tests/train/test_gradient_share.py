"""The gradient-share diagnostic: its definition, its dependence on beta and on the scaling, and its logging."""
import csv
import json
import math

import pytest
import torch

from daenr_fast.models import build_model
from daenr_fast.train import TrainConfig, train
from daenr_fast.train.gradient_share import gradient_shares, shared_encoder_parameters
from daenr_fast.train.losses import loss_terms, term_weights

N = 6


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(8, 1, 32, 32, generator=g) * 2 - 1, torch.poisson(torch.full((8, N), 2.0), generator=g)


def _shares(name, layer=2, **config):
    torch.manual_seed(0)
    model = build_model(name, layer=layer, n_neurons=N).train()
    x, s = _batch()
    cfg = TrainConfig(model=name, layer=layer, readout_reg=1.0, **config)
    _, terms = loss_terms(model, model(x), x, s, cfg)
    return gradient_shares(model, terms, term_weights(cfg)), model, terms, cfg


def test_share_is_the_norm_ratio_over_the_encoder_blocks_both_terms_reach():
    shares, model, terms, cfg = _shares("cae-fr", layer=2, alpha=1.0, beta=0.5)
    blocks = model.autoencoder.encoder.blocks
    params = list(blocks[0].parameters()) + list(blocks[1].parameters())
    assert shared_encoder_parameters(model) == params
    norms = {}
    for name, weight in (("reconstruction", 1.0), ("response", 0.5)):
        grads = torch.autograd.grad(weight * terms[name], params, retain_graph=True)
        norms[name] = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert set(shares) == {"reconstruction", "response"}      # the L1 penalty does not reach the encoder
    assert shares["response"] == pytest.approx(norms["response"] / (norms["response"] + norms["reconstruction"]))
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(p.grad is None for p in model.parameters())     # the diagnostic leaves no gradient behind


def test_the_response_to_reconstruction_ratio_is_linear_in_beta_and_pixels():
    """Same model and batch: g_resp / g_rec scales with beta, and the pixel sum multiplies g_rec by 32*32."""
    def ratio(**config):
        shares = _shares("cae-fr", **config)[0]
        return shares["response"] / shares["reconstruction"]

    assert ratio(beta=1e-2) == pytest.approx(10 * ratio(beta=1e-3), rel=1e-4)
    assert ratio(beta=1e-3, recon_reduction="mean") == pytest.approx(
        1024 * ratio(beta=1e-3, recon_reduction="sum"), rel=1e-4)
    assert ratio(beta=1e-3, response_reduction="sum") == pytest.approx(
        N * ratio(beta=1e-3, response_reduction="mean"), rel=1e-4)


@pytest.mark.parametrize("name,expected", [
    ("cae", {"reconstruction"}), ("vae", {"reconstruction", "kl"}), ("cnn-fr", {"response"}),
    ("vq-vae-fm", {"reconstruction", "vq", "response"}),
])
def test_one_term_models_have_share_one(name, expected):
    shares = _shares(name, alpha=1.0, beta=1.0)[0]
    assert set(shares) == expected and sum(shares.values()) == pytest.approx(1.0)


def test_train_logs_the_share_at_every_evaluation(tiny_splits, tmp_path):
    cfg = TrainConfig(model="cae-fr", layer=3, alpha=1.0, beta=1e-2, batch_size=8, eval_every=2, max_steps=6,
                      checkpoint_every=6, out=str(tmp_path / "run"), progress=False, figures=False)
    result = train(cfg, tiny_splits)
    with open(tmp_path / "run" / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    for row in rows:
        total = float(row["grad_share_reconstruction"]) + float(row["grad_share_response"])
        assert total == pytest.approx(1.0) and 0 < float(row["grad_share_response"]) < 1
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["gradient_share"]
    assert saved["steps"] == [2, 4, 6]
    responses = [float(r["grad_share_response"]) for r in rows]
    assert saved["by_term"]["response"] == pytest.approx(responses)
    assert saved["mean"]["response"] == pytest.approx(sum(responses) / 3)
    assert saved["last"]["response"] == pytest.approx(responses[-1])
    assert result.metrics["gradient_share"]["mean"] == pytest.approx(saved["mean"])
