"""The training protocol on tiny data: losses go down, rounds halve the lr, resume is exact, bad runs fail clearly."""
import math

import pytest
import torch

from daenr_fast.train import NonFiniteLossError, TrainConfig, load_checkpoint, train
from daenr_fast.train.losses import loss_terms

QUICK = dict(batch_size=8, eval_every=2, patience=1000, max_steps=8, progress=False, figures=False)


def _terms_on_train(model, splits, config):
    """Loss terms over the whole training split, batch statistics (train mode), no update."""
    x, s = splits.tensors("train")
    model.train()
    with torch.no_grad():
        _, terms = loss_terms(model, model(x), x, s, config)
    return {k: float(v) for k, v in terms.items()}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("model,fit_terms", [
    ("cae-fr", ("reconstruction", "response")),
    ("cnn-fm", ("response",)),
    ("vae-fc", ("reconstruction", "response")),
    ("vq-vae-fr", ("reconstruction", "response")),
])
def test_short_run_lowers_each_loss_term(tiny_splits, model, fit_terms):
    """The data terms fall over 30 steps; the VAE's KL and the VQ commitment are regularisers that may rise as
    the latent starts to carry information, so for them only their separate logging is checked."""
    cfg = TrainConfig(model=model, layer=3, alpha=1.0, beta=1.0, seed=0, lr=3e-3, **{**QUICK, "max_steps": 30})
    torch.manual_seed(0)
    from daenr_fast.train.trainer import prepare_model

    x, s = tiny_splits.tensors("train")
    before_model = prepare_model(cfg, x, s, tiny_splits.n_neurons, torch.device("cpu"))
    before = _terms_on_train(before_model, tiny_splits, cfg)
    result = train(cfg, tiny_splits)
    after = _terms_on_train(result.model, tiny_splits, cfg)
    for term in fit_terms:
        assert after[term] < before[term], (term, before[term], after[term])
    hist = result.history
    logged = {k[len("train_"):] for k in hist[0] if k.startswith("train_")}
    assert set(before) | {"total"} == logged           # every term is logged separately
    aux = {"vae": "kl", "vq-vae": "vq"}.get(model.rsplit("-", 1)[0])
    if aux:
        assert aux in logged and f"val_{aux}" in hist[0]


def test_rounds_halve_lr_and_restore_best(tiny_splits):
    cfg = TrainConfig(model="cnn-fr", layer=2, beta=1.0, lr=0.05, rounds=3, **{**QUICK, "eval_every": 1,
                                                                                "patience": 2, "max_steps": 200})
    result = train(cfg, tiny_splits)
    lrs = [row["lr"] for row in result.history]
    assert sorted(set(lrs), reverse=True) == [0.05, 0.025, 0.0125]
    assert result.metrics["run"]["rounds"] == 3 and result.metrics["run"]["stop_reason"] == "patience"
    best = min(row["val_total"] for row in result.history)
    assert result.metrics["run"]["best_val_loss"] == pytest.approx(best)
    from daenr_fast.train.trainer import validation_loss

    x, s = tiny_splits.tensors("val")
    assert validation_loss(result.model, x, s, cfg)["total"] == pytest.approx(best, rel=1e-5)


def test_max_steps_caps_the_run(tiny_splits):
    result = train(TrainConfig(model="cae", **{**QUICK, "max_steps": 5, "eval_every": 2}), tiny_splits)
    assert result.metrics["run"]["steps"] == 5 and result.metrics["run"]["stop_reason"] == "max_steps"
    assert "images" in result.metrics and "neurons" not in result.metrics


def test_resume_matches_uninterrupted_run(tiny_splits, tmp_path):
    """VAE (global RNG for sampling) through a round change; killed at step 8, last checkpoint at step 6."""
    common = dict(model="vae-fr", layer=2, beta=0.1, seed=3, deterministic=True, checkpoint_every=3,
                  **{**QUICK, "max_steps": 14, "patience": 4})
    full = train(TrainConfig(out=str(tmp_path / "a"), **common), tiny_splits)

    def kill(trainer):
        if trainer.state["step"] == 8:
            raise _Stop

    cfg_b = TrainConfig(out=str(tmp_path / "b"), **common)
    with pytest.raises(_Stop):
        train(cfg_b, tiny_splits, on_step=kill)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["state"]["step"] == 6
    resumed = train(cfg_b, tiny_splits, resume=True)
    for key in ("images", "neurons", "per_neuron"):
        assert resumed.metrics[key] == full.metrics[key]
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [r["val_total"] for r in resumed.history] == [r["val_total"] for r in full.history]


def test_resume_refuses_changed_config(tiny_splits, tmp_path):
    cfg = TrainConfig(model="cnn-fc", out=str(tmp_path), **{**QUICK, "max_steps": 2})
    train(cfg, tiny_splits)
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, tiny_splits)
    with pytest.raises(ValueError, match="cannot resume.*beta"):
        train(cfg.replace(beta=0.5), tiny_splits, resume=True)


def test_non_finite_loss_names_step_and_term_and_keeps_checkpoint(tiny_splits, tmp_path):
    """After the step-4 checkpoint the readout starts returning NaN: step 5 fails naming the term."""
    cfg = TrainConfig(model="cae-fr", out=str(tmp_path), checkpoint_every=2, **QUICK)

    def poison(trainer):
        if trainer.state["step"] == 4:
            trainer.model.readout.register_forward_hook(lambda module, inputs, output: output * float("nan"))

    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, tiny_splits, on_step=poison)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.step == 5 and err.term == "response"
    assert "step 5" in str(err) and "'response'" in str(err) and str(tmp_path) in str(err)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_negative_responses_need_mse(tiny_splits):
    from daenr_fast.data import prepare

    from tiny_data import tiny_dataset

    with pytest.warns(UserWarning, match="negative"):
        signed = prepare(tiny_dataset(counts=False))
    with pytest.raises(ValueError, match="response_loss='mse'"):
        train(TrainConfig(model="cnn-fr", **QUICK), signed)
    result = train(TrainConfig(model="cae-fr", response_loss="mse", **QUICK), signed)
    assert math.isfinite(result.metrics["neurons"]["pcc"])
    assert result.config.response_activation == "identity"
