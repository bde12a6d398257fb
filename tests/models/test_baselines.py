"""The baselines as the paper's citations define them, by default: FR with its L1 penalty, FC with dropout and L2
(McIntosh et al. 2016), FM with the fixed mask at the receptive-field envelope peak (Klindt et al. 2017), VQ-VAE
without dead-code restarts; the stronger variants stay selectable by option, bad option values list the valid ones."""
import pytest
import torch

from daenr_fast.models import build_model
from daenr_fast.models.readouts import build_readout
from daenr_fast.models.receptive_fields import envelope_peak_centers, sta_envelopes
from daenr_fast.models.registry import MODEL_OPTIONS, READOUT_L1, STRONG_BASELINE_OPTIONS
from daenr_fast.nn.fixed_mask_readout import gaussian_masks, peak_masks
from daenr_fast.train import TrainConfig
from daenr_fast.train.losses import loss_terms

from test_readouts import _rf_data  # this folder is on sys.path while pytest collects it


def test_fr_has_the_l1_penalty_by_default():
    head = build_model("cnn-fr", layer=2, n_neurons=4).readout
    with torch.no_grad():
        head.features.normal_()
    l1 = (head.normalized_spatial.abs().sum((1, 2)) * head.features.abs().sum(1)).sum()
    torch.testing.assert_close(head.regularizer(), READOUT_L1 * l1)
    assert READOUT_L1 > 0 and TrainConfig().readout_reg == 1.0
    assert build_model("cnn-fr", layer=2, n_neurons=4, readout_l1=0.0).readout.regularizer() == 0


def test_the_trainer_adds_the_readout_penalty_by_default():
    torch.manual_seed(0)
    model = build_model("cnn-fr", layer=2, n_neurons=3)
    x, s = torch.rand(2, 1, 32, 32), torch.ones(2, 3)
    _, terms = loss_terms(model, model(x), x, s, TrainConfig(model="cnn-fr", alpha=0.0, beta=1.0))
    torch.testing.assert_close(terms["readout_reg"], model.readout_regularizer())


def test_fc_has_dropout_and_l2_by_default():
    torch.manual_seed(0)
    head = build_model("cnn-fc", layer=4, n_neurons=5).readout
    assert (MODEL_OPTIONS["fc_dropout"], MODEL_OPTIONS["fc_l2"]) == (0.5, 0.01)
    w = head.linear.weight
    torch.testing.assert_close(head.regularizer(), 0.01 * 0.5 * w.pow(2).sum())
    h = torch.ones(1, 48, 8, 8)
    head.train()
    kept = head.dropout(h.flatten(1))
    assert set(kept.unique().tolist()) == {0.0, 2.0} and 0.4 < (kept == 0).float().mean() < 0.6
    head.eval()
    torch.testing.assert_close(head(h), h.flatten(1) @ w.T + head.bias)
    plain = build_model("cnn-fc", layer=4, n_neurons=5, fc_dropout=0.0, fc_l2=0.0).readout.train()
    assert torch.equal(plain(h), plain(h)) and plain.regularizer() == 0


def test_fm_is_the_one_hot_mask_at_the_envelope_peak_by_default():
    images, responses, centers = _rf_data(n=600)
    found = envelope_peak_centers(images, responses)
    # the two linear (simple) cells; the wide blur pulls a peak near the border about 2 px inwards
    assert torch.linalg.norm(found[:2] - centers[:2], dim=1).max() <= 2.5
    env = sta_envelopes(images, responses)
    assert env.shape == (3, 32, 32) and torch.equal(found[0], torch.tensor([float(i) for i in divmod(
        int(env[0].argmax()), 32)]))
    head = build_model("cnn-fm", layer=3, n_neurons=3).readout
    assert head.method == "envelope-peak"
    head.fit(images, responses)
    torch.testing.assert_close(head.centers, found)
    torch.testing.assert_close(head.mask, peak_masks(found, 8, 32))
    assert torch.equal(head.mask.sum((1, 2)), torch.ones(3)) and set(head.mask.unique().tolist()) == {0.0, 1.0}
    cells = torch.floor((found + 0.5) / 4).long()
    assert all(head.mask[n, r, c] == 1 for n, (r, c) in enumerate(cells.tolist()))
    torch.testing.assert_close(head.regularizer(), READOUT_L1 * head.features.abs().sum())
    ridge = build_model("cnn-fm", layer=3, n_neurons=3, fm_mask="ridge-gaussian").readout
    ridge.fit(images, responses)
    torch.testing.assert_close(ridge.mask, gaussian_masks(ridge.centers, 8, 32, ridge.sigma))


def test_peak_masks_pick_the_cell_holding_the_centre():
    masks = peak_masks(torch.tensor([[0.0, 31.0], [1.4, 1.6], [-3.0, 40.0]]), grid=16, image_size=32)
    assert [tuple(torch.nonzero(m)[0].tolist()) for m in masks] == [(0, 15), (0, 1), (0, 15)]


def _codebook_after_one_step(**options):
    torch.manual_seed(0)
    model = build_model("vq-vae", **options).train()
    before = model.autoencoder.quantizer.codebook.clone()
    model(torch.rand(4, 1, 32, 32) * 2 - 1)
    return model.autoencoder.quantizer, before


def test_vq_vae_does_not_restart_dead_codes_by_default():
    quantizer, before = _codebook_after_one_step()
    assert quantizer.dead_code_threshold == 0
    unused = quantizer.ema_count < 0.999   # counts start at 1 and decay where no vector was assigned
    assert unused.sum() > 100
    torch.testing.assert_close(quantizer.codebook[unused], before[unused], rtol=1e-3, atol=1e-4)
    restarted, before = _codebook_after_one_step(vq_restarts=True)
    assert restarted.dead_code_threshold == 1.0
    assert (restarted.codebook - before).abs().sum(1).gt(1e-3).sum() > 100


def test_the_stronger_baselines_stay_selectable_together():
    strong = {name: build_model(name, layer=3, n_neurons=3, **STRONG_BASELINE_OPTIONS)
              for name in ("cnn-fr", "cnn-fc", "cnn-fm", "vq-vae")}
    assert strong["cnn-fr"].readout_regularizer() == 0 and strong["cnn-fc"].readout_regularizer() == 0
    assert strong["cnn-fc"].readout.dropout.p == 0
    assert strong["cnn-fm"].readout.method == "ridge-gaussian"
    assert strong["vq-vae"].autoencoder.quantizer.dead_code_threshold == 1.0
    assert set(STRONG_BASELINE_OPTIONS) <= set(MODEL_OPTIONS)
    assert all(MODEL_OPTIONS[k] != v for k, v in STRONG_BASELINE_OPTIONS.items())


@pytest.mark.parametrize("options,match", [
    ({"fm_mask": "gauss"}, r"unknown fixed mask 'gauss' \(fm_mask\); valid: ridge-gaussian, envelope-peak"),
    ({"fc_dropout": 1.0}, r"fc_dropout must be a probability in \[0, 1\), got 1.0"),
    ({"fc_l2": -1.0}, r"fc_l2 must be a finite number >= 0, got -1.0"),
    ({"readout_l1": float("nan")}, r"readout_l1 must be a finite number >= 0, got nan"),
    ({"vq_restarts": "yes"}, r"vq_restarts must be True or False, got 'yes'"),
])
def test_bad_baseline_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        build_model("vq-vae-fm", layer=2, n_neurons=3, **options)


def test_unknown_readout_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown readout 'sxf'; valid: fr, fc, fm, gr"):
        build_readout("sxf", (48, 16, 16), 3, MODEL_OPTIONS)
