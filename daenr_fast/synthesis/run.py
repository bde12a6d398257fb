"""A trained run opened for synthesis and prediction: :func:`open_run` -> :class:`SynthesisRun`.

The run folder is loaded with :func:`daenr_fast.train.evaluate.load_run` (the same loader ``daenr evaluate``
uses) and its data is prepared exactly as for training (:func:`daenr_fast.train.trainer.load_splits`), so the
natural images, the intensity mapping and the recorded responses are the run's own.

Images here are in model space: (B,1,S,S) float32 on the [-1,1] scale the model was trained on (S = 32).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from daenr_fast.models.joint import DAENR, CNNBaseline
from daenr_fast.models.readouts import activate

@dataclass
class SynthesisRun:
    """A trained model with its data.

    Attributes:
        run_dir: the run folder.
        config: its :class:`~daenr_fast.train.config.TrainConfig`.
        model: the model in eval mode (gradients flow to the input only; parameters are frozen).
        splits: the run's prepared data (:class:`~daenr_fast.data.Splits`).
        truth: the simulator's :class:`~daenr_fast.data.GroundTruth` (``truth.rates(images)``: noise-free rates
            (N, n) of model-space images), or None for recorded data.
    """

    run_dir: Path
    config: object
    model: nn.Module
    splits: object
    truth: Optional[object]

    @property
    def activation(self) -> str:
        return self.config.response_activation

    @property
    def n_neurons(self) -> int:
        return self.splits.n_neurons

    @property
    def image_size(self) -> int:
        return self.splits.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_decoder(self) -> bool:
        return isinstance(self.model, DAENR)

    @property
    def label(self) -> str:
        from daenr_fast.models.registry import display_name

        return display_name(self.config.model, self.config.layer)

    def response(self, x: Tensor) -> Tensor:
        """Readout pre-activation z (B, n) of images x (B,1,S,S); differentiable in x.

        Runs only the encoder blocks up to the readout's layer (the decoder does not enter the prediction).
        """
        encoder = self.model.autoencoder.encoder if isinstance(self.model, DAENR) else self.model.encoder
        h = x
        for block in encoder.blocks[: self.model.layer]:
            h = block(h)
        return self.model.readout(h)

    def rates(self, x: Tensor) -> Tensor:
        """Predicted rates ``act(z)`` (B, n) of images x (B,1,S,S); differentiable in x."""
        return activate(self.response(x), self.activation)

    @torch.no_grad()
    def predict(self, images: Tensor, batch: int = 256) -> np.ndarray:
        """Predicted rates (N, n) float64 of model-space images (N,1,S,S), in batches."""
        out = [self.rates(images[i:i + batch].to(self.device).float()).cpu() for i in range(0, len(images), batch)]
        return torch.cat(out).double().numpy()

    def check_neurons(self, neurons) -> np.ndarray:
        """``neurons`` (indices 0..n-1 into the data's neuron order) as an int array; a ValueError naming
        ``--neurons`` for an empty list, a repeat, a non-integer or an index out of range."""
        values = list(np.atleast_1d(np.asarray(neurons, dtype=object)).ravel())
        if not values:
            raise ValueError("--neurons: no neuron given")
        out = []
        for v in values:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"--neurons: neuron indices must be integers, got {v!r}")
            if not 0 <= int(v) < self.n_neurons:
                raise ValueError(f"--neurons: unknown neuron {int(v)}: the run has {self.n_neurons} neurons "
                                 f"(indices 0..{self.n_neurons - 1})")
            out.append(int(v))
        if len(set(out)) != len(out):
            dup = sorted({v for v in out if out.count(v) > 1})
            raise ValueError(f"--neurons: neuron(s) {', '.join(map(str, dup))} given more than once")
        return np.asarray(out, dtype=np.int64)


def parse_neurons(text: str, n_neurons: Optional[int] = None) -> list:
    """``"3,17,40"`` -> [3, 17, 40]; ``"all"`` -> range(n_neurons); a ValueError naming ``--neurons`` otherwise."""
    text = str(text).strip()
    if text == "all":
        if n_neurons is None:
            raise ValueError("--neurons all needs the run's neuron count")
        return list(range(n_neurons))
    parts = [p.strip() for p in text.split(",")]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--neurons must be comma-separated neuron indices (e.g. 3,17) or 'all', got {text!r}") \
            from None


def open_run(run_dir, device: str = "cpu") -> SynthesisRun:
    """Load a run folder written by ``daenr train`` (its model, its data, and the simulator when there is one).

    Raises:
        FileNotFoundError: no such folder, or no checkpoint in it.
        ValueError: the run's model has no readout (an autoencoder baseline), or its data no longer has the
            neurons the model was trained on.
    """
    from daenr_fast.train.evaluate import load_run
    from daenr_fast.train.trainer import load_splits

    config, model, payload = load_run(run_dir, device)
    if not isinstance(model, (DAENR, CNNBaseline)):
        raise ValueError(f"RUN_DIR {run_dir}: model {config.model!r} has no readout, so there are no neurons to "
                         "drive; use a joint model (e.g. cae-fr) or a CNN baseline (e.g. cnn-fr)")
    for p in model.parameters():
        p.requires_grad_(False)
    splits = load_splits(config)
    if splits.n_neurons != payload["n_neurons"]:
        raise ValueError(f"RUN_DIR {run_dir}: the run was trained on {payload['n_neurons']} neurons but its data "
                         f"{config.data} now has {splits.n_neurons}")
    truth = _ground_truth(run_dir, config)
    if truth is not None and truth.n_neurons != splits.n_neurons:
        raise ValueError(f"RUN_DIR {run_dir}: its ground truth has {truth.n_neurons} neurons but its data "
                         f"{splits.n_neurons}")
    return SynthesisRun(Path(run_dir), config, model, splits, truth)


def _ground_truth(run_dir, config):
    """The run's :class:`~daenr_fast.data.GroundTruth`: its saved ``ground_truth.npz``, else the one of its data
    spec (regenerated), or None for recorded data."""
    from daenr_fast.data.ground_truth import RUN_FILENAME, GroundTruth, ground_truth_for

    saved = Path(run_dir) / RUN_FILENAME
    return GroundTruth.load(saved) if saved.is_file() else ground_truth_for(config.data)
