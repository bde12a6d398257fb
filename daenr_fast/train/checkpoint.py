"""Atomic checkpoints with everything a run needs to continue bit for bit.

A checkpoint is a dict saved with :func:`torch.save`::

    config      TrainConfig as a dict
    model       model.state_dict()             (FM masks are buffers, so they travel with it)
    optimizer   optimizer.state_dict()         (holds the current learning rate)
    best_model  state_dict of the best validation loss so far
    state       step, round, best_val, best_step, epoch order and position, running train sums, history, ...
    rng         torch (CPU and CUDA), numpy and python RNG states, and the batch-order generator
    finished    True once training ended (model = best parameters)

Writes go to a temporary file in the same folder that is then renamed over the target (``os.replace`` is atomic
on POSIX and Windows), so a run killed mid-write leaves the previous checkpoint intact. Checkpoints are pickles:
load only files you trust.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing file raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def capture_rng_states(generator: torch.Generator | None = None) -> dict:
    """The global torch / CUDA / numpy / python RNG states, plus ``generator``'s if given."""
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        states["generator"] = generator.get_state()
    return states


def restore_rng_states(states: dict, generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng_states`."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if generator is not None and "generator" in states:
        generator.set_state(states["generator"])
