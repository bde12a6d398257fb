"""The paper's training protocol (section 4.1) as :func:`train`.

    round = 1; lr = 1e-3
    every step: Adam step on a random batch of 64 training images
    every eval_every steps: validation loss L_val (same weighted loss, eval mode, whole validation set)
        if L_val < best - min_delta: best = L_val, keep a copy of the parameters
        elif no improvement for `patience` steps: restore the best parameters, lr *= lr_factor, round += 1
    stop after `rounds` rounds (paper: 2) or `max_steps` steps; the final model is the best one.

Every evaluation row of ``history.csv`` also holds ``grad_share_<term>``, each loss term's share of the shared
encoder's gradient on that step's training batch (:mod:`daenr_fast.train.gradient_share`); ``metrics.json``
summarises it under ``gradient_share``.

Batches are drawn without replacement from an epoch permutation of the training tensors (no DataLoader, no
workers). A checkpoint (see :mod:`daenr_fast.train.checkpoint`) is written every ``checkpoint_every`` steps and
at the end, and the one before it is kept as ``checkpoint.prev.pt``; ``resume=True`` continues from the newest
usable one (the previous one, with a warning, when ``checkpoint.pt`` is damaged) and, with the same seed, ends
with the same parameters and metrics as an uninterrupted run (exactly so under ``deterministic=True``).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from daenr_fast.models.readouts import inverse_activation
from daenr_fast.models.registry import build_model, display_name
from daenr_fast.train.checkpoint import (CHECKPOINT_NAME, PREVIOUS_NAME, CheckpointWarning, RunCheckpoint,
                                         capture_rng_states, has_checkpoint, load_run_checkpoint,
                                         remove_stale_temp_files, restore_rng_states, save_checkpoint)
from daenr_fast.train import gradient_share
from daenr_fast.train.config import TrainConfig
from daenr_fast.train.losses import first_non_finite, loss_terms, term_weights
from daenr_fast.train.presets import check_scaling

HISTORY_NAME = "history.csv"
#: config fields that may differ between a run and its resumption (they do not change the numbers)
RESUME_FREE_FIELDS = ("out", "progress", "figures", "device")
EVAL_BATCH = 256


class NonFiniteLossError(ValueError):
    """A loss term became NaN or infinite; ``step``, ``term`` and ``checkpoint`` (last good one, or None)."""

    def __init__(self, step: int, term: str, value: float, checkpoint: Optional[Path]):
        self.step, self.term, self.checkpoint = step, term, checkpoint
        where = (f"the last good checkpoint is {checkpoint}" if checkpoint is not None
                 else "no checkpoint had been written yet")
        super().__init__(f"non-finite loss at step {step}: term {term!r} = {value}; training stopped, {where} "
                         f"(try a smaller lr or alpha/beta)")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the run's configuration.
        model: the trained model (best validation parameters), in eval mode.
        metrics: test-set metrics (see :func:`daenr_fast.train.evaluate.evaluate_model`) plus run statistics.
        history: one dict per validation evaluation (also written to ``history.csv``).
        out: the output folder, or None.
    """

    config: TrainConfig
    model: nn.Module
    metrics: dict
    history: List[dict] = field(default_factory=list)
    out: Optional[Path] = None


class BatchOrder:
    """Epoch permutations of ``n`` indices cut into batches; drops the last partial batch of each epoch."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, min(batch_size, n), generator
        self.perm: Optional[Tensor] = None
        self.pos = 0

    def next(self) -> Tensor:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.perm, self.pos = state["perm"], state["pos"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def compile_mode(device: torch.device) -> Optional[str]:
    """The ``torch.compile`` mode of a compiled run (``daenr train --compile``): ``"reduce-overhead"`` (the step
    replayed from CUDA graphs) on CUDA, the default mode (None) elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else None


def load_splits(config: TrainConfig):
    """Load ``config.data`` and split it (validation part of the training set, seeded by ``config.seed``)."""
    from daenr_fast import data

    return data.prepare(data.load(config.data), val_fraction=config.val_fraction, seed=config.seed)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@contextmanager
def deterministic_mode(enabled: bool):
    """``torch.use_deterministic_algorithms(True)`` inside the block when ``enabled``; restored afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def prepare_model(config: TrainConfig, train_images: Tensor, train_responses: Tensor, n_neurons: int,
                  device: torch.device) -> nn.Module:
    """Build the model, fit the readout to the training data where it has a ``fit`` hook (an FM readout's fixed
    masks, a GR readout's initial positions) and set the readout bias to the inverse activation of the mean
    training response (so training starts at the mean rate)."""
    model = build_model(config.model, layer=config.layer, n_neurons=n_neurons, **config.model_options)
    if model.has_readout:
        if callable(getattr(model.readout, "fit", None)):
            model.readout.fit(train_images, train_responses)
        with torch.no_grad():
            model.readout.bias.copy_(inverse_activation(train_responses.mean(0), config.response_activation))
    return model.to(device)


@torch.no_grad()
def validation_loss(model: nn.Module, images: Tensor, responses: Tensor, config: TrainConfig) -> Dict[str, float]:
    """Weighted loss and its terms on a whole split (eval mode), averaged per image."""
    was_training = model.training
    model.eval()
    sums: Dict[str, float] = {}
    for start in range(0, images.shape[0], EVAL_BATCH):
        x, s = images[start:start + EVAL_BATCH], responses[start:start + EVAL_BATCH]
        total, terms = loss_terms(model, model(x), x, s, config)
        for name, value in list(terms.items()) + [("total", total)]:
            sums[name] = sums.get(name, 0.0) + float(value) * x.shape[0]
    model.train(was_training)
    return {name: value / images.shape[0] for name, value in sums.items()}


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    new = config.to_dict()
    diffs = [f"{k}: {saved.get(k)!r} -> {new[k]!r}" for k in new
             if k not in RESUME_FREE_FIELDS and saved.get(k) != new[k]]
    if diffs:
        raise ValueError("cannot resume: the configuration differs from the checkpoint's (" + "; ".join(diffs) + ")")


def _history_tmp(path: Path) -> Path:
    return path.with_suffix(".csv.tmp")


def write_history(path: Path, history: List[dict]) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    tmp = _history_tmp(path)
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


class Trainer:
    """One training run; :func:`train` is the usual entry point."""

    def __init__(self, config: TrainConfig, splits, device: torch.device, compile: bool = False):
        self.config, self.splits, self.device = config, splits, device
        self.out = Path(config.out) if config.out else None
        self.checkpoint_path = self.out / CHECKPOINT_NAME if self.out else None
        self.previous_path = self.out / PREVIOUS_NAME if self.out else None
        self.last_checkpoint: Optional[Path] = None
        self._keep_current = True  # False while checkpoint.pt is damaged: it must not become checkpoint.prev.pt
        x, s = splits.tensors("train")
        self.train_x, self.train_s = x.to(device).float(), s.to(device).float()
        vx, vs = splits.tensors("val")
        self.val_x, self.val_s = vx.to(device).float(), vs.to(device).float()
        if config.uses_responses:
            splits.check_responses()
        if config.uses_responses and config.response_loss == "poisson" and bool((self.train_s < 0).any()):
            raise ValueError("the training responses contain negative values, which are not spike counts: "
                             "use response_loss='mse' (--response-loss mse)")
        self.model = prepare_model(config, self.train_x.cpu(), self.train_s.cpu(), splits.n_neurons, device)
        # the training steps' forward: the model, or its torch.compile (same parameters; see compile_mode)
        self.compile_mode = compile_mode(device) if compile else None
        self.forward = torch.compile(self.model, mode=self.compile_mode) if compile else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.batches = BatchOrder(self.train_x.shape[0], config.batch_size, self.generator)
        self.state = {"step": 0, "round": 1, "best_val": math.inf, "best_step": 0, "finished": False,
                      "stop_reason": None, "train_sums": {}, "train_count": 0, "train_seconds": 0.0}
        self.best_model = copy.deepcopy(self.model.state_dict())
        self.history: List[dict] = []
        self._shares: Dict[str, float] = {}  # gradient shares of the last step, when it is an evaluation step

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        if self.checkpoint_path is None:
            return
        payload = {
            "config": self.config.to_dict(),
            "n_neurons": self.splits.n_neurons,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_model": self.best_model,
            "state": dict(self.state, batches=self.batches.state()),
            "history": self.history,
            "rng": capture_rng_states(self.generator),
        }
        self.last_checkpoint = save_checkpoint(self.checkpoint_path, payload,
                                               previous=self.previous_path if self._keep_current else None)
        self._keep_current = True
        write_history(self.out / HISTORY_NAME, self.history)

    def restore(self, found: RunCheckpoint) -> None:
        """Continue from ``found`` (see :func:`load_run_checkpoint`)."""
        payload = found.payload
        _check_resumable(payload["config"], self.config)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.best_model = payload["best_model"]
        state = dict(payload["state"])
        self.batches.load(state.pop("batches"))
        self.state = state
        self.history = list(payload["history"])
        restore_rng_states(payload["rng"], self.generator)
        self.last_checkpoint = found.path
        self._keep_current = found.passed_over is None

    def claim_folder(self) -> None:
        """Make the output folder this run's: stale temporary files removed, ``config.json`` written and, unless
        the run was restored from a checkpoint, an overwritten run's checkpoints deleted."""
        if self.out is None:
            return
        remove_stale_temp_files(self.out)
        _history_tmp(self.out / HISTORY_NAME).unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        if self.last_checkpoint is None:
            for stale in (self.checkpoint_path, self.previous_path):
                stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------ protocol
    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _end_round(self, reason: str) -> None:
        self.model.load_state_dict(self.best_model)
        if reason == "patience" and self.state["round"] < self.config.rounds:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.config.lr_factor
            self.state["round"] += 1
            self.state["best_step"] = self.state["step"]
        else:
            self.state["finished"] = True
            self.state["stop_reason"] = reason

    def _evaluate(self, val: Optional[Dict[str, float]] = None) -> dict:
        """Record an evaluation (``val``: the validation loss when already computed, e.g. by a grid)."""
        st = self.state
        if val is None:
            val = validation_loss(self.model, self.val_x, self.val_s, self.config)
        row = {"step": st["step"], "round": st["round"], "lr": self.lr}
        count = max(st["train_count"], 1)
        row.update({f"train_{k}": v / count for k, v in st["train_sums"].items()})
        row.update({f"val_{k}": v for k, v in val.items()})
        row.update({gradient_share.COLUMN_PREFIX + k: v for k, v in self._shares.items()})
        st["train_sums"], st["train_count"] = {}, 0
        if val["total"] < st["best_val"] - self.config.min_delta:
            st["best_val"], st["best_step"] = val["total"], st["step"]
            self.best_model = copy.deepcopy(self.model.state_dict())
        row["best_val_total"] = st["best_val"]
        self.history.append(row)
        if st["step"] - st["best_step"] >= self.config.patience:
            self._end_round("patience")
        return row

    def _step(self) -> None:
        idx = self.batches.next().to(self.device)
        x, s = self.train_x[idx], self.train_s[idx]
        step = self.state["step"] + 1
        forward = self.forward
        if forward is not self.model and step % self.config.eval_every == 0:
            forward = self.model  # gradient shares take several backward passes, which a compiled backward refuses
        elif self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        total, terms = loss_terms(self.model, forward(x), x, s, self.config)
        bad = first_non_finite(total, terms)
        if bad is not None:
            value = float((terms.get(bad, total)).detach())
            raise NonFiniteLossError(step, bad, value, self.last_checkpoint)
        self._shares = (gradient_share.gradient_shares(self.model, terms, term_weights(self.config))
                        if step % self.config.eval_every == 0 else {})
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self._add_step_values({name: float(value.detach())
                               for name, value in list(terms.items()) + [("total", total)]})

    def _add_step_values(self, values: Dict[str, float]) -> None:
        """Count one finished step and add its loss terms (``total`` included) to the running training sums."""
        self.state["step"] += 1
        sums = self.state["train_sums"]
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        self.state["train_count"] += 1

    def _end_step(self, started: float, val: Optional[Dict[str, float]] = None) -> Optional[dict]:
        """The protocol after a step: an evaluation every ``eval_every`` steps (``val`` as for :meth:`_evaluate`),
        the end of the run at ``max_steps``, the time since ``started``, a checkpoint. Returns the evaluation row
        or None."""
        cfg, st = self.config, self.state
        row = self._evaluate(val) if st["step"] % cfg.eval_every == 0 else None
        if not st["finished"] and cfg.max_steps is not None and st["step"] >= cfg.max_steps:
            self._end_round("max_steps")
        st["train_seconds"] += time.perf_counter() - started
        if st["step"] % cfg.checkpoint_every == 0 or st["finished"]:
            self.save()
        return row

    def fit(self, on_step: Optional[Callable[["Trainer"], None]] = None) -> None:
        cfg, st = self.config, self.state
        self.model.train()
        bar = tqdm(total=cfg.max_steps, initial=st["step"], disable=not cfg.progress, dynamic_ncols=True,
                   desc=display_name(cfg.model, cfg.layer), unit="step", leave=False)
        try:
            while not st["finished"]:
                start = time.perf_counter()
                self._step()
                row = self._end_step(start)
                if row is not None:
                    bar.set_postfix(round=row["round"], lr=f"{row['lr']:.1e}",
                                    train=f"{row.get('train_total', float('nan')):.4g}",
                                    val=f"{row['val_total']:.4g}", best=f"{st['best_val']:.4g}")
                bar.update(1)
                if on_step is not None:
                    on_step(self)
        finally:
            bar.close()
        self.model.eval()


def train(config: TrainConfig, splits=None, *, resume: bool = False, overwrite: bool = False,
          on_step: Optional[Callable[[Trainer], None]] = None, compile: bool = False) -> TrainResult:
    """Train ``config`` (paper protocol), evaluate on the test set and, if ``config.out`` is set, write
    ``config.json``, ``checkpoint.pt``, ``history.csv``, ``metrics.json``, ``reconstructions.png`` and
    ``neurons.png`` there.

    Args:
        config: the run's :class:`TrainConfig`.
        splits: an already prepared :class:`daenr_fast.data.Splits` (skips loading ``config.data``; a sweep
            passes the same splits to many runs).
        resume: continue from ``config.out/checkpoint.pt`` (which must exist and match the config), or from
            ``checkpoint.prev.pt`` with a :class:`CheckpointWarning` when ``checkpoint.pt`` is damaged or missing.
        overwrite: allow starting a fresh run in a folder that already holds a checkpoint (its checkpoints are
            deleted once the new run is set up).
        on_step: called with the :class:`Trainer` after every step (``trainer.state["step"]``, ``.model``,
            ``.history``), e.g. for external progress reporting; an exception it raises stops the run.
        compile: run the training steps' forward under ``torch.compile`` (:func:`compile_mode`); not part of the
            configuration, so a run may be resumed with or without it.

    Returns:
        a :class:`TrainResult`; ``result.metrics`` holds the metrics also written to ``metrics.json``.
    """
    with deterministic_mode(config.deterministic):
        trainer = open_run(config, splits, resume=resume, overwrite=overwrite, compile=compile)
        trainer.claim_folder()
        trainer.fit(on_step)
        return finish_run(trainer)


def check_run(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> None:
    """The checks :func:`train` makes before it touches anything: the configuration and the output folder."""
    config.validate()
    check_scaling(config.preset, config.recon_reduction, config.response_reduction)
    out = Path(config.out) if config.out else None
    if resume and out is None:
        raise ValueError("resume needs an output folder (config.out) holding a checkpoint")
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"the output folder {out} is an existing file, not a folder: choose another one")
    if out is not None and has_checkpoint(out) and not (resume or overwrite):
        raise ValueError(f"{out} already holds a run: resume it or allow overwriting it")


def open_run(config: TrainConfig, splits=None, *, resume: bool = False, overwrite: bool = False,
             device: Optional[torch.device] = None, compile: bool = False) -> Trainer:
    """Everything :func:`train` does before fitting but writing (call it inside :func:`deterministic_mode`; then
    :meth:`Trainer.claim_folder`): the checks, the newest usable checkpoint when resuming, the seeds, the data and
    the :class:`Trainer`, restored from that checkpoint. ``device``: None = ``config.device``; ``compile``: see
    :func:`train`."""
    check_run(config, resume=resume, overwrite=overwrite)
    out = Path(config.out) if config.out else None
    found = load_run_checkpoint(out) if resume else None
    if found is not None and found.passed_over is not None:
        warnings.warn(f"{found.passed_over}; resuming from the previous checkpoint {found.path} (step {found.step})",
                      CheckpointWarning, stacklevel=3)
    device = resolve_device(config.device) if device is None else device
    seed_everything(config.seed)
    if splits is None:
        splits = load_splits(config)
    trainer = Trainer(config, splits, device, compile=compile)
    if found is not None:
        trainer.restore(found)
    return trainer


def finish_run(trainer: Trainer) -> TrainResult:
    """Everything :func:`train` does after fitting: test metrics, run summary, ``metrics.json`` and figures."""
    from daenr_fast.train.evaluate import evaluate_model, run_summary, write_outputs

    config, splits, out = trainer.config, trainer.splits, trainer.out
    metrics = evaluate_model(trainer.model, splits, config)
    metrics["run"] = run_summary(trainer.state, trainer.model)
    metrics["gradient_share"] = gradient_share.summary(trainer.history)
    if out is not None:
        write_outputs(out, trainer.model, splits, config, metrics, figures=config.figures)
    return TrainResult(config, trainer.model, metrics, trainer.history, out)
