"""``daenr train`` / ``daenr evaluate`` end to end on a tiny .npz dataset."""
import json
from pathlib import Path

import pytest

from daenr_fast.cli import build_parser, main
from daenr_fast.commands.train import config_from_args

TINY = ["--max-steps", "6", "--eval-every", "3", "--checkpoint-every", "3", "--batch-size", "8", "--no-progress"]


def test_train_then_evaluate_then_resume(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", tiny_npz, "--out", str(out), "--model", "cae-fm", "--layer", "3",
                 "--beta", "0.5", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "CAE-FM3" in printed and "PCC (mean)" in printed and "SSIM" in printed
    assert "share of the shared encoder's gradient (mean over evaluation steps): reconstruction" in printed
    for name in ("config.json", "checkpoint.pt", "history.csv", "metrics.json", "reconstructions.png",
                 "neurons.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["images"]) == {"mse", "psnr", "ssim"}
    per = metrics["per_neuron"]
    assert {"pcc", "p_value", "significant", "single_trial_corr", "oracle_corr", "feve", "corr_to_truth",
            "noise_ceiling_fraction", "rf_peak_distance"} <= set(per)
    assert len(per["pcc"]) == metrics["neurons"]["n_neurons"] == 6
    assert metrics["run"]["steps"] == 6
    assert json.loads((out / "config.json").read_text())["beta"] == 0.5
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 2

    assert main(["evaluate", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"{metrics['neurons']['pcc']:.3f}" in table and f"{metrics['images']['ssim']:.3f}" in table
    assert main(["evaluate", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["per_neuron"]["pcc"] == pytest.approx(per["pcc"])

    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0   # finished: re-evaluates
    assert json.loads((out / "metrics.json").read_text())["neurons"] == metrics["neurons"]


@pytest.mark.parametrize("args,message", [
    (["--layer", "5"], "layer must be one of [1, 2, 3, 4]"),
    (["--alpha", "-1"], "alpha must be a finite number >= 0"),
    (["--preset", "table8:region3:cae-fr2", "--beta", "1"], "--preset sets model, layer, alpha and beta"),
    (["--preset", "table10:region1:cae-fr1"], "table10 covers region(s) 3"),
    (["--resume", "--beta", "1"], "--resume continues with the checkpoint's settings; drop --data, --beta"),
])
def test_bad_arguments_exit_2_with_a_message(tiny_npz, tmp_path, capsys, args, message):
    assert main(["train", "--data", tiny_npz, "--out", str(tmp_path / "r"), *TINY, *args]) == 2
    assert message in capsys.readouterr().err


def test_unknown_model_and_existing_run(tiny_npz, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "cae-xx"])
    assert info.value.code == 2 and "cae-fr" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "no run folder" in capsys.readouterr().err
    out = tmp_path / "r"
    assert main(["train", "--data", tiny_npz, "--out", str(out), "--model", "cnn-fr", *TINY, "--max-steps", "2",
                 "--no-figures"]) == 0
    assert not (out / "reconstructions.png").exists() and not (out / "neurons.png").exists()
    assert main(["train", "--data", tiny_npz, "--out", str(out), *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err


def _config(argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_no_arguments_means_cae_fr2_on_simulated_region3():
    cfg = _config([])
    assert (cfg.model, cfg.layer, cfg.data, cfg.alpha, cfg.beta) == ("cae-fr", 2, "sim:region3", 1.0, 1e-3)
    assert Path(cfg.out) == Path("runs/cae-fr2-sim-region3-s0")


def test_preset_sets_model_layer_weights_and_data():
    cfg = _config(["--preset", "table13:region3:vq-vae-fm4", "--max-steps", "0"])
    assert (cfg.model, cfg.layer, cfg.alpha, cfg.beta, cfg.data) == ("vq-vae-fm", 4, 1e-3, 1.0, "sim:region3")
    assert cfg.preset == "table13:region3:vq-vae-fm4" and cfg.max_steps is None
    cfg = _config(["--preset", "table8:region1:cae-fr1", "--data", "x.npz", "--response-loss", "mse"])
    assert cfg.data == "x.npz" and cfg.response_activation == "identity" and cfg.out == "runs/cae-fr1-x-s0"


def test_scaling_options_reach_the_config_and_unknown_names_list_the_valid_ones(tiny_npz, tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["train", "--data", tiny_npz, "--recon-reduction", "sum", "--response-reduction",
                              "mean"])
    config = config_from_args(args)
    assert (config.recon_reduction, config.response_reduction) == ("sum", "mean")
    assert (config_from_args(parser.parse_args(["train"])).recon_reduction,
            config_from_args(parser.parse_args(["train"])).response_reduction) == ("mean", "sum")
    for option in ("--recon-reduction", "--response-reduction"):
        with pytest.raises(SystemExit) as info:
            main(["train", option, "avg"])
        assert info.value.code == 2
        assert "invalid choice: 'avg' (choose from 'sum', 'mean')" in capsys.readouterr().err


def test_baseline_options_reach_the_model_and_a_real_run(tiny_npz, tmp_path):
    parser = build_parser()
    args = ["--readout-l1", "0", "--fc-dropout", "0.25", "--fc-l2", "0", "--fm-mask", "ridge-gaussian",
            "--gr-init", "random", "--vq-restarts"]
    config = config_from_args(parser.parse_args(["train", *args]))
    assert config.model_options == {"readout_l1": 0.0, "fc_dropout": 0.25, "fc_l2": 0.0, "fm_mask": "ridge-gaussian",
                                    "gr_init": "random", "vq_restarts": True}
    assert config_from_args(parser.parse_args(["train"])).model_options == {}
    out = tmp_path / "fc"
    assert main(["train", "--data", tiny_npz, "--out", str(out), "--model", "cnn-fc", "--fc-dropout", "0.25",
                 *TINY, "--no-figures"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_options"] == {"fc_dropout": 0.25}


@pytest.mark.parametrize("option,value", [("--fm-mask", "gaussian"), ("--gr-init", "centre")])
def test_unknown_readout_choices_list_the_valid_ones(option, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", option, value])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
