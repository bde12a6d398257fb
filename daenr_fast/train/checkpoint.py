"""Checksummed, atomic checkpoints with everything a run needs to continue bit for bit, and the previous one kept.

A checkpoint holds a dict (:data:`RUN_KEYS` for a training run)::

    config      TrainConfig as a dict
    n_neurons   number of neurons of the training data
    model       model.state_dict()             (FM masks are buffers, so they travel with it)
    optimizer   optimizer.state_dict()         (holds the current learning rate)
    best_model  state_dict of the best validation loss so far
    state       step, round, best_val, best_step, finished, epoch order and position, running train sums, ...
    history     one dict per validation evaluation
    rng         torch (CPU and CUDA), numpy and python RNG states, and the batch-order generator

File format: one ASCII header line, then the :func:`torch.save` bytes of the dict::

    daenr-checkpoint 1 sha256=<64 hex digits of the payload> bytes=<payload length>\\n
    <payload>

Loading checks the header, the length and the SHA-256 before unpickling anything, so a flipped byte, a
truncated or empty file, or a file that is not a checkpoint is a :class:`CheckpointError` naming the file and the
problem, never a silently different model. (Files from before the header, plain ``torch.save`` archives, load
after their per-record CRC-32s are checked.) The payload is an ordinary ``torch.save`` archive:
``torch.load(io.BytesIO(data[data.index(b"\\n") + 1:]))`` reads it without this module.

Writes go to a temporary file in the same folder (fsynced), then the current checkpoint becomes
``checkpoint.prev.pt`` and the temporary file is renamed to ``checkpoint.pt`` (``os.replace`` is atomic on POSIX
and Windows). A run killed mid-write therefore keeps both earlier checkpoints; its orphaned temporary file is
removed by :func:`remove_stale_temp_files` when the next run starts in that folder. :func:`load_run_checkpoint`
falls back to ``checkpoint.prev.pt`` when ``checkpoint.pt`` is damaged or missing. Checkpoints are pickles:
load only files you trust.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"
#: keys of a training run's checkpoint (module docstring)
RUN_KEYS = ("config", "n_neurons", "model", "optimizer", "best_model", "state", "history", "rng")
MAGIC = b"daenr-checkpoint"
FORMAT_VERSION = 1
_HEADER = re.compile(rb"^daenr-checkpoint (\d+) sha256=([0-9a-f]{64}) bytes=(\d+)\n")
_MAX_HEADER = 128
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, truncated, empty, not a checkpoint).

    Attributes:
        path: the file.
        reason: what is wrong with it, e.g. ``"truncated: 120 of 4000 payload bytes"``.
    """

    def __init__(self, path, reason: str, advice: str = ""):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}" + (f"; {advice}" if advice else ""))


class CheckpointWarning(UserWarning):
    """A run resumed from ``checkpoint.prev.pt`` because ``checkpoint.pt`` was damaged or missing."""


def _temp_prefix(name: str) -> str:
    return f".{name}."


def save_checkpoint(path, payload: dict, previous=None) -> Path:
    """Write ``payload`` to ``path`` (header + checksum, temp file + fsync + rename); returns the path.

    Args:
        path: the checkpoint file.
        payload: any dict :func:`torch.save` can write.
        previous: if given and ``path`` exists, the existing checkpoint is moved there once the new one is on
            disk (the trainer passes ``checkpoint.prev.pt``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getbuffer()
    header = f"{MAGIC.decode()} {FORMAT_VERSION} sha256={hashlib.sha256(data).hexdigest()} bytes={len(data)}\n"
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(header.encode("ascii"))
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _verified_payload(path: Path, data: bytes) -> io.BytesIO:
    """The ``torch.save`` bytes of checkpoint file ``data``, after the header, length and checksum checks."""
    if not data:
        raise CheckpointError(path, "empty file (0 bytes)")
    if data.startswith(_ZIP_MAGIC):  # written before checkpoints had a header: check its CRC-32s instead
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise CheckpointError(path, f"damaged or truncated archive ({err})") from None
        if bad is not None:
            raise CheckpointError(path, f"damaged: record {bad} fails its CRC-32 check")
        return io.BytesIO(data)
    if not data.startswith(MAGIC):
        raise CheckpointError(path, "not a daenr_fast checkpoint (it does not start with the checkpoint header)")
    match = _HEADER.match(data[:_MAX_HEADER])
    if match is None:
        raise CheckpointError(path, "damaged: unreadable checkpoint header")
    version, digest, size = int(match.group(1)), match.group(2).decode(), int(match.group(3))
    if version > FORMAT_VERSION:
        raise CheckpointError(path, f"written in checkpoint format {version} by a newer daenr_fast (this one reads "
                                    f"format {FORMAT_VERSION}): upgrade daenr_fast")
    body = memoryview(data)[match.end():]
    if len(body) < size:
        raise CheckpointError(path, f"truncated: {len(body)} of {size} payload bytes")
    if len(body) > size:
        raise CheckpointError(path, f"damaged: {len(body) - size} bytes more than the {size} payload bytes recorded")
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(path, "damaged: its contents do not match the SHA-256 recorded when it was written")
    return io.BytesIO(body)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: damaged, truncated, empty or not a checkpoint (module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = _verified_payload(path, path.read_bytes())
    try:
        loaded = torch.load(payload, map_location=map_location, weights_only=False)
    except Exception as err:  # the checksum matched, so this is not damage: e.g. an incompatible torch
        raise CheckpointError(path, f"unreadable payload ({type(err).__name__}: {err})") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(path, f"not a daenr_fast checkpoint (it holds a {type(loaded).__name__}, not a dict)")
    return loaded


@dataclass
class RunCheckpoint:
    """What :func:`load_run_checkpoint` found.

    Attributes:
        payload: the checkpoint dict (:data:`RUN_KEYS`).
        path: the file it came from (``checkpoint.pt``, or ``checkpoint.prev.pt`` when ``passed_over`` is set).
        passed_over: why ``checkpoint.pt`` was not used (damaged, or missing because a write was interrupted
            between its two renames), or None.
    """

    payload: dict
    path: Path
    passed_over: Optional[CheckpointError] = None

    @property
    def step(self) -> int:
        return int(self.payload["state"]["step"])


def _load_run_file(path: Path, map_location) -> dict:
    payload = load_checkpoint(path, map_location)
    missing = [key for key in RUN_KEYS if key not in payload]
    if missing:
        raise CheckpointError(path, f"not a training checkpoint (no {', '.join(missing)})")
    return payload


def has_checkpoint(folder) -> bool:
    """Whether ``folder`` holds a checkpoint (current or previous)."""
    folder = Path(folder)
    return (folder / CHECKPOINT_NAME).exists() or (folder / PREVIOUS_NAME).exists()


def load_run_checkpoint(folder, map_location="cpu") -> RunCheckpoint:
    """The newest usable checkpoint of a run folder: ``checkpoint.pt``, else ``checkpoint.prev.pt``.

    Raises:
        FileNotFoundError: the folder holds neither file.
        CheckpointError: neither is usable; the message names both problems and says to start over.
    """
    folder = Path(folder)
    current, previous = folder / CHECKPOINT_NAME, folder / PREVIOUS_NAME
    if not has_checkpoint(folder):
        raise FileNotFoundError(f"no checkpoint in {folder} (no {CHECKPOINT_NAME})")
    try:
        return RunCheckpoint(_load_run_file(current, map_location), current)
    except CheckpointError as err:
        problem = err
    except FileNotFoundError:
        problem = CheckpointError(current, "missing (a checkpoint write was interrupted)")
    try:
        return RunCheckpoint(_load_run_file(previous, map_location), previous, passed_over=problem)
    except CheckpointError as err:
        why = f"the previous checkpoint is not usable either ({err})"
    except FileNotFoundError:
        why = f"no previous checkpoint ({PREVIOUS_NAME}) to fall back on"
    raise CheckpointError(current, problem.reason, f"{why}: start the run over (the same daenr train command with "
                                           f"--overwrite)") from None


def remove_stale_temp_files(folder) -> list:
    """Delete the temporary files that writes interrupted by a kill left in ``folder``; returns their paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(f"{_temp_prefix(CHECKPOINT_NAME)}*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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
