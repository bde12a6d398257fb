"""Integer codes of the fused Poisson loss's options, as every backend receives them.

Torch-free, so the Triton kernels, the op file and the tests share one definition. The C++/CUDA twin is
``csrc/poisson_loss_enums.h``; ``tests/ops/test_poisson_codes.py`` checks that the two agree.
"""
from __future__ import annotations

import enum


class PoissonActivation(enum.IntEnum):
    """The rate ``r = act(z)``; the lowercase member name is the user-facing ``activation=`` string."""

    IDENTITY = 0
    """``r = z``."""
    ELU1 = 1
    """``r = ELU(z) + 1``: ``z + 1`` for z > 0, ``exp(z)`` otherwise."""
    SOFTPLUS = 2
    """``r = log(1 + exp(z))`` (torch's threshold 20: ``r = z`` above it)."""
    EXP = 3
    """``r = exp(z)``: z is the log-rate (eps is unused)."""


class PoissonMode(enum.IntEnum):
    """What the loss is reduced over, with N the last dimension of z."""

    NONE = 0
    """Per element: the loss has z's shape (``reduction="none"``)."""
    TOTAL = 1
    """Over every element: a scalar (``reduction="mean"`` or ``"sum"``)."""
    PER_NEURON = 2
    """Over the leading dimensions only (``per_neuron=True``): shape (N,)."""


ACTIVATION_NAMES: tuple[str, ...] = tuple(member.name.lower() for member in PoissonActivation)
"""The ``activation=`` strings in code order: ``ACTIVATION_NAMES[code]`` names ``PoissonActivation(code)``."""
