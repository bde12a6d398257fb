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
from daenr_fast import ops
from daenr_fast.models.receptive_fields import estimate_rf_centers, gaussian_masks

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


class FullyConnectedReadout(nn.Module):
    """``z = W vec(h) + b``: h (B,C,H,W) -> z (B,n); W (n, C*H*W) initialised N(0, init_noise^2)."""

    def __init__(self, in_shape: Tuple[int, int, int], outdims: int, init_noise: float = 1e-3):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.outdims = outdims
        self.linear = nn.Linear(self.in_shape[0] * self.in_shape[1] * self.in_shape[2], outdims)
        nn.init.normal_(self.linear.weight, std=init_noise)
        nn.init.zeros_(self.linear.bias)

    @property
    def bias(self) -> Tensor:
        return self.linear.bias

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h.flatten(1))

    def regularizer(self) -> Tensor:
        """``sum |W|`` (L1 sparsity of the weights)."""
        return self.linear.weight.abs().sum()

    def masks(self) -> Optional[Tensor]:
        """Spatial weight maps ``||W[n,:,x,y]||_2`` over channels -> (n,H,W)."""
        return self.linear.weight.detach().view(self.outdims, *self.in_shape).norm(dim=1)


class FixedMaskReadout(nn.Module):
    """Factorized readout with a fixed spatial mask: ``z[b,n] = sum_c w[n,c] sum_xy m[n,x,y] h[b,c,x,y] + b[n]``.

    ``mask`` (n,H,W) and ``centers`` (n,2, RF centres in image pixels) are buffers: saved with the model, never
    trained. Until :meth:`fit` (or :meth:`set_centers`) runs the mask is uniform and ``fitted`` is False.

    Args:
        in_shape: (C,H,W) of h_i.
        outdims: number of neurons n.
        sigma: Gaussian mask standard deviation in image pixels.
        image_size: side of the input image (32).
        init_noise: std of the initial feature weights.
    """

    def __init__(self, in_shape: Tuple[int, int, int], outdims: int, sigma: float = 3.0, image_size: int = 32,
                 init_noise: float = 1e-3):
        super().__init__()
        c, h, w = in_shape
        if h != w:
            raise ValueError(f"FixedMaskReadout needs a square feature map, got in_shape={tuple(in_shape)}")
        self.in_shape = tuple(in_shape)
        self.outdims = outdims
        self.sigma = float(sigma)
        self.image_size = image_size
        self.features = nn.Parameter(torch.randn(outdims, c) * init_noise)
        self.bias = nn.Parameter(torch.zeros(outdims))
        self.register_buffer("mask", torch.full((outdims, h, w), 1.0 / (h * w)))
        self.register_buffer("centers", torch.full((outdims, 2), (image_size - 1) / 2.0))
        self.register_buffer("fitted", torch.tensor(False))

    def forward(self, h: Tensor) -> Tensor:
        return ops.factorized_readout(h, self.mask, self.features, self.bias)

    def set_centers(self, centers: Tensor) -> None:
        """Set the RF centres (n,2) in image pixels and rebuild the Gaussian masks on h_i's grid."""
        if centers.shape != (self.outdims, 2):
            raise ValueError(f"centers must be ({self.outdims},2), got {tuple(centers.shape)}")
        with torch.no_grad():
            self.centers.copy_(centers)
            self.mask.copy_(gaussian_masks(centers, self.in_shape[1], self.image_size, self.sigma))
            self.fitted.fill_(True)

    def fit(self, images: Tensor, responses: Tensor) -> Tensor:
        """Estimate RF centres from training data (see :mod:`daenr_fast.models.receptive_fields`); returns them."""
        if images.shape[-1] != self.image_size:
            raise ValueError(f"images must be {self.image_size}x{self.image_size}, got {tuple(images.shape)}")
        centers = estimate_rf_centers(images.cpu(), responses.cpu())
        self.set_centers(centers.to(self.mask.device))
        return centers

    def regularizer(self) -> Tensor:
        """``sum |w|`` over the feature weights (the mask is fixed)."""
        return self.features.abs().sum()

    def masks(self) -> Tensor:
        return self.mask.detach()


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
