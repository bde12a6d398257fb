"""TrainConfig validation and the paper's alpha:beta presets (Tables 8-13)."""
import pytest

from daenr_fast.models import MODEL_NAMES
from daenr_fast.train import TrainConfig, get_preset, presets


@pytest.mark.parametrize("changes,message", [
    ({"model": "cae-xyz"}, "unknown model 'cae-xyz'; valid models: cae-fr, cae-fc"),
    ({"layer": 5}, r"layer must be one of \[1, 2, 3, 4\]"),
    ({"alpha": -1.0}, "alpha must be a finite number >= 0"),
    ({"beta": float("nan")}, "beta must be a finite number >= 0"),
    ({"alpha": 0.0, "beta": 0.0}, "nothing to train"),
    ({"model": "cae", "alpha": 0.0}, "image loss only: alpha must be > 0"),
    ({"model": "cnn-fr", "beta": 0.0}, "response loss only: beta must be > 0"),
    ({"response_loss": "gauss"}, "response_loss must be one of poisson, mse"),
    ({"activation": "identity"}, "Poisson loss needs positive rates"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"max_steps": -5}, "max_steps must be a positive integer"),
    ({"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\)"),
    ({"lr_factor": 2.0}, r"lr_factor must be in \(0, 1\]"),
    ({"model_options": {"latent": 3}}, "unknown model option"),
])
def test_bad_config_is_a_clear_value_error(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_defaults_are_the_paper_protocol():
    cfg = TrainConfig().validate()
    assert (cfg.model, cfg.layer, cfg.data) == ("cae-fr", 2, "sim:region3")
    assert (cfg.lr, cfg.lr_factor, cfg.rounds, cfg.patience, cfg.batch_size) == (1e-3, 0.5, 2, 1000, 64)
    assert (cfg.alpha, cfg.beta) == (1.0, 1e-3)          # Table 8, region 3, CAE-FR2
    assert cfg.response_activation == "elu1"
    assert TrainConfig(response_loss="mse").response_activation == "identity"


def test_round_trip_and_unknown_keys():
    cfg = TrainConfig(model="vq-vae-fm", layer=4, model_options={"num_codes": 64})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown config key.*colour"):
        TrainConfig.from_dict({"colour": 1})


def test_presets_cover_tables_8_to_13():
    table = presets()
    assert len(table) == 12 + 12 + 36 + 3 * 36
    assert {p.table for p in table.values()} == {f"table{i}" for i in range(8, 14)}
    assert all(p.model in MODEL_NAMES and p.layer in (1, 2, 3, 4) for p in table.values())


@pytest.mark.parametrize("name,expected", [
    ("table8:region3:cae-fr2", ("cae-fr", 2, 3, 1.0, 1e-3)),
    ("table8:region1:cae-fr3", ("cae-fr", 3, 1, 1.0, 1e-4)),
    ("table9:region2:cae-fr3", ("cae-fr", 3, 2, 1e-4, 1.0)),
    ("table10:region3:vq-vae-fm1", ("vq-vae-fm", 1, 3, 1.0, 2e-1)),
    ("table11:region1:vae-fr1", ("vae-fr", 1, 1, 1e-3, 1.0)),
    ("table12:region2:cae-fc3", ("cae-fc", 3, 2, 1.0, 5e-2)),
    ("TABLE13:Region3:VQ-VAE-FR4", ("vq-vae-fr", 4, 3, 1e-4, 1.0)),
])
def test_preset_values_match_the_paper(name, expected):
    p = get_preset(name)
    assert (p.model, p.layer, p.region, p.alpha, p.beta) == expected
    assert p.data == f"sim:region{p.region}"


@pytest.mark.parametrize("name,message", [
    ("table8:region3:vae-fr2", "table8 covers region.*cae-fr"),
    ("table10:region1:cae-fr1", "table10 covers region\\(s\\) 3"),
    ("table7:region1:cae-fr1", "unknown preset table 'table7'; valid: table8"),
    ("cae-fr2", "tableT:regionR:MODELi"),
])
def test_unknown_presets(name, message):
    with pytest.raises(ValueError, match=message):
        get_preset(name)
