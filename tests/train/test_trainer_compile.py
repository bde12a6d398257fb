"""``daenr train --compile``: the model's forward under torch.compile (the default mode on CPU) trains to the same
losses as eager, step for step, on a tiny .npz dataset; the option leaves the configuration (and so resuming)
alone."""
import csv
import json

import pytest
import torch

from daenr_fast.cli import main
from daenr_fast.train import TrainConfig
from daenr_fast.train.trainer import compile_mode, open_run

TINY = ["--model", "cae-fr", "--layer", "2", "--max-steps", "4", "--eval-every", "2", "--checkpoint-every", "4",
        "--batch-size", "8", "--no-progress", "--no-figures"]
LOSS_COLUMNS = ("train_total", "val_total", "train_reconstruction", "train_response")


def _history(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_compiled_run_gives_the_eager_losses(tiny_npz, tmp_path):
    for name, flags in (("eager", []), ("compiled", ["--compile"])):
        assert main(["train", "--data", tiny_npz, "--out", str(tmp_path / name), *TINY, *flags]) == 0
    eager, compiled = _history(tmp_path / "eager" / "history.csv"), _history(tmp_path / "compiled" / "history.csv")
    assert len(eager) == len(compiled) == 2
    for a, b in zip(eager, compiled):
        for column in LOSS_COLUMNS:
            assert float(b[column]) == pytest.approx(float(a[column]), rel=1e-4, abs=1e-6), column
    saved = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("eager", "compiled")]
    assert saved[0] == {**saved[1], "out": saved[0]["out"]}  # --compile is not part of the run's configuration


def test_compiled_forward_wraps_the_model_and_shares_its_parameters(tiny_splits):
    trainer = open_run(TrainConfig(model="cae-fr", layer=2, batch_size=8, max_steps=1, progress=False,
                                   figures=False), tiny_splits, compile=True)
    assert trainer.forward is not trainer.model
    assert isinstance(trainer.forward, torch.nn.Module)
    assert dict(trainer.forward.named_parameters()).keys() == {f"_orig_mod.{k}" for k, _ in
                                                              trainer.model.named_parameters()}
    eager = open_run(TrainConfig(model="cae-fr", layer=2, progress=False, figures=False), tiny_splits)
    assert eager.forward is eager.model


def test_compile_mode_is_reduce_overhead_on_cuda_only():
    assert compile_mode(torch.device("cuda")) == compile_mode(torch.device("cuda", 1)) == "reduce-overhead"
    assert compile_mode(torch.device("cpu")) is None
