"""What a synthesised image should do to its neuron: :class:`Objective` (``max`` or ``target:RATE``).

For neuron ``k`` and an image ``x`` with readout pre-activation ``z_k(x)`` and predicted rate
``r_k(x) = act(z_k(x))`` (the run's output nonlinearity, monotone increasing)::

    max          loss = -z_k(x)              (same maximiser as -r_k, without the flat gradient of
                                              elu(z) + 1 at very negative z)
                 score = r_k(x)
    target:RATE  loss = (r_k(x) - RATE)^2
                 score = -|r_k(x) - RATE|

The loss is minimised by the optimisers; the score (higher is better) picks the best restart and decides which
of two images "does better" on a neuron, for predicted and for true rates alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from torch import Tensor

KINDS = ("max", "target")


@dataclass(frozen=True)
class Objective:
    """``kind`` is ``"max"`` or ``"target"``; ``target`` is the rate (the data's response unit) for ``"target"``."""

    kind: str = "max"
    target: Optional[float] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"objective must be 'max' or 'target:RATE', got kind {self.kind!r}")
        if self.kind == "target" and (self.target is None or not math.isfinite(self.target) or self.target < 0):
            raise ValueError(f"objective target:RATE needs a finite RATE >= 0, got {self.target!r}")
        if self.kind == "max" and self.target is not None:
            raise ValueError("objective 'max' takes no target rate")

    @property
    def label(self) -> str:
        return "max" if self.kind == "max" else f"target:{self.target:g}"

    def loss(self, z: Tensor, rate: Tensor) -> Tensor:
        """Per-image loss (B,) from the pre-activation ``z`` (B,) and the rate ``rate`` (B,) of each image's neuron."""
        if self.kind == "max":
            return -z
        return (rate - self.target) ** 2

    def score(self, rate):
        """Higher is better: the rate for ``max``, minus the distance to the target for ``target``; any shape."""
        if isinstance(rate, Tensor):
            return rate if self.kind == "max" else -(rate - self.target).abs()
        rate = np.asarray(rate, dtype=np.float64)
        return rate if self.kind == "max" else -np.abs(rate - self.target)


def parse_objective(text) -> Objective:
    """``"max"`` or ``"target:RATE"`` (e.g. ``"target:2.5"``) -> :class:`Objective`; anything else a ValueError
    naming ``--objective``."""
    if isinstance(text, Objective):
        return text
    if not isinstance(text, str):
        raise ValueError(f"--objective must be 'max' or 'target:RATE', got {text!r}")
    text = text.strip()
    if text == "max":
        return Objective("max")
    head, sep, value = text.partition(":")
    if head == "target" and sep:
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"--objective target:RATE needs a number for RATE, got {value!r}") from None
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"--objective target:RATE needs a finite RATE >= 0, got {value!r}")
        return Objective("target", rate)
    raise ValueError(f"--objective must be 'max' or 'target:RATE' (e.g. target:2.5), got {text!r}")


def select_best(scores: Tensor, restarts: int) -> Tensor:
    """Index (K,) of the best restart per neuron from scores (K*R,) laid out neuron-major (R restarts each)."""
    return scores.view(-1, restarts).argmax(dim=1)


