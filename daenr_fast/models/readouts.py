"""Readout heads mapping a feature map h_i (B,C,H,W) to neuron responses (B,n).

All heads return the *pre-activation* ``z``; the output nonlinearity (default ELU+1, so rates are
``r = elu(z) + 1 > 0``) is fused into the Poisson loss and applied by :func:`activate` for predictions.

* FR, factorized (Klindt et al. 2017): ``z[b,n] = sum_c w[n,c] sum_xy m[n,x,y] h[b,c,x,y] + b[n]`` with a learned
  spatial mask m (n,H,W) and feature weights w (n,C) — :class:`daenr_fast.nn.FactorizedReadout`.
* FC, fully connected: ``z = W vec(h) + b`` with W (n, C*H*W) — :class:`FullyConnectedReadout`.
* FM, fixed mask: the FR formula with m fixed to a Gaussian at each neuron's RF centre estimated from the
  training data before training (a buffer, never trained) — :class:`FixedMaskReadout`.

Every head has ``regularizer() -> scalar`` (an L1 sparsity penalty) and ``masks() -> (n,H,W) or None``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daenr_fast import nn as dnn
from daenr_fast.nn import FixedMaskReadout, FullyConnectedReadout  # noqa: F401  (re-exported)

READOUTS = ("fr", "fc", "fm")
ACTIVATIONS = ("identity", "elu1", "softplus", "exp")


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown response activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return name


def activate(z: Tensor, activation: str = "elu1") -> Tensor:
    """Output nonlinearity: identity, ``elu(z)+1``, ``softplus(z)`` or ``exp(z)``; z (B,n) -> rates (B,n)."""
    check_activation(activation)
    if activation == "elu1":
        return F.elu(z) + 1.0
    if activation == "softplus":
        return F.softplus(z)
    if activation == "exp":
        return z.exp()
    return z


def inverse_activation(rate: Tensor, activation: str = "elu1") -> Tensor:
    """z with ``activate(z) == rate`` (rates clamped to >= 1e-3 for the positive activations)."""
    check_activation(activation)
    if activation == "identity":
        return rate
    rate = rate.clamp_min(1e-3)
    if activation == "elu1":
        return torch.where(rate >= 1.0, rate - 1.0, rate.log())
    if activation == "softplus":
        return rate + torch.log(-torch.expm1(-rate))
    return rate.log()


def build_readout(kind: str, in_shape: Tuple[int, int, int], n_neurons: int, *, init_noise: float = 1e-3,
                  fm_sigma: float = 3.0, image_size: int = 32) -> nn.Module:
    """Build an FR / FC / FM head for a feature map of shape ``in_shape`` (C,H,W) and ``n_neurons`` outputs."""
    if kind == "fr":
        return dnn.FactorizedReadout(in_shape=tuple(in_shape), outdims=n_neurons, bias=True, init_noise=init_noise)
    if kind == "fc":
        return FullyConnectedReadout(in_shape, n_neurons, init_noise=init_noise)
    if kind == "fm":
        return FixedMaskReadout(in_shape, n_neurons, sigma=fm_sigma, image_size=image_size, init_noise=init_noise)
    raise ValueError(f"unknown readout {kind!r}; valid: {', '.join(READOUTS)}")


def readout_masks(head: nn.Module) -> Optional[Tensor]:
    """Spatial masks (n,H,W) of any head: FR ``normalized_spatial``, FM its fixed mask, FC weight norms."""
    if hasattr(head, "masks"):
        return head.masks()
    if hasattr(head, "normalized_spatial"):
        return head.normalized_spatial.detach()
    return None
