"""``daenr train`` of the Gaussian-readout models (not in the paper) end to end on the tiny .npz dataset: the
trainer starts the positions at the fitted RF centres, training moves them, the run evaluates and reloads."""
import json

import pytest
import torch

from daenr_fast.cli import main
from daenr_fast.models.gaussian_head import pixels_to_grid
from daenr_fast.models.receptive_fields import estimate_rf_centers
from daenr_fast.train import load_splits
from daenr_fast.train.evaluate import load_run

from test_cli_train import TINY  # this folder is on sys.path while pytest collects it


@pytest.mark.parametrize("model,layer,grid", [("cae-gr", 2, (16, 16)), ("cnn-gr", 3, (8, 8))])
def test_train_gaussian_readout_model(tiny_npz, tmp_path, capsys, model, layer, grid):
    out = tmp_path / "run"
    assert main(["train", "--data", tiny_npz, "--out", str(out), "--model", model, "--layer", str(layer),
                 "--no-figures", *TINY]) == 0
    printed = capsys.readouterr().out
    assert f"{model.upper()}{layer}" in printed and "PCC (mean)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["steps"] == 6 and metrics["neurons"]["n_neurons"] == 6
    config, trained, _ = load_run(out)
    assert config.model == model and config.readout_reg == 1.0
    images, responses = load_splits(config).tensors("train")
    start = pixels_to_grid(estimate_rf_centers(images, responses), grid, 32)
    mu = trained.readout.mu.detach().view(-1, 2)
    assert not torch.allclose(mu, start)                # the positions were trained ...
    assert (mu - start).abs().max() < 0.2               # ... from the RF start (6 steps of Adam at lr 1e-3)
    assert main(["evaluate", str(out)]) == 0
