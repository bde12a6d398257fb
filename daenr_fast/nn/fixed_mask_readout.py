"""``FixedMaskReadout``: the factorized readout with a fixed (not learned) mask per neuron (the paper's FM).

Two ways to make the mask from the training data (``method``):

* ``"ridge-gaussian"`` (the module's default): RF centre from the ridge fit of linear and energy features
  (:func:`daenr_fast.models.receptive_fields.estimate_rf_centers`), mask a normalised Gaussian of std ``sigma``
  image pixels around it (:func:`gaussian_masks`);
* ``"envelope-peak"`` (Klindt et al. 2017's fixed-mask CNN): RF centre at the peak of the spike-triggered
  envelope (:func:`daenr_fast.models.receptive_fields.envelope_peak_centers`), mask 1 on the one cell of the
  layer's grid that holds it and 0 elsewhere (:func:`peak_masks`).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn

from daenr_fast import _validate
from daenr_fast.nn import _args
from daenr_fast.ops.factorized_readout import factorized_readout


RIDGE_GAUSSIAN, ENVELOPE_PEAK = "ridge-gaussian", "envelope-peak"
METHODS = (RIDGE_GAUSSIAN, ENVELOPE_PEAK)


def _positive(name: str, value) -> float:
    value = _args.real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be a finite real number > 0, got {value!r}")
    return value


def gaussian_masks(centers: Tensor, grid: int, image_size: int = 32, sigma: float = 3.0) -> Tensor:
    """Normalised Gaussian masks on a ``grid`` x ``grid`` layer for RF centres given in image pixels.

    Cell (i, j) of the grid has its centre at image coordinates ``((i + 1/2) S/g - 1/2, (j + 1/2) S/g - 1/2)``;
    ``mask[n,i,j] ∝ exp(-|cell_ij - c_n|^2 / (2 sigma^2))`` with ``sum_ij mask[n,i,j] = 1``.

    Args:
        centers: (n,2) RF centres (row, col) in image pixels.
        grid: side of the layer's spatial grid (16 for h1/h2, 8 for h3/h4).
        image_size: side of the image (32).
        sigma: Gaussian standard deviation in image pixels.

    Returns:
        masks (n, grid, grid), float32.
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma (fm_sigma) must be a finite number > 0 (pixels), got {sigma}")
    coords = (torch.arange(grid, dtype=torch.float32) + 0.5) * (image_size / grid) - 0.5
    rows = coords.view(1, grid, 1) - centers[:, 0].float().view(-1, 1, 1)
    cols = coords.view(1, 1, grid) - centers[:, 1].float().view(-1, 1, 1)
    masks = torch.exp(-(rows.pow(2) + cols.pow(2)) / (2 * sigma ** 2))
    return masks / masks.flatten(1).sum(1).view(-1, 1, 1)


def peak_masks(centers: Tensor, grid: int, image_size: int = 32) -> Tensor:
    """One-hot masks (n, grid, grid): 1 on the cell holding each RF centre (row, col) in image pixels.

    Cell (i, j) covers image pixels ``[i S/g - 1/2, (i + 1) S/g - 1/2)`` (pixel centres at integers), so the
    centre's cell is ``floor((c + 1/2) g / S)``, clamped to the grid.
    """
    cells = torch.floor((centers.float() + 0.5) * (grid / image_size)).long().clamp(0, grid - 1)
    masks = torch.zeros(centers.shape[0], grid, grid)
    masks[torch.arange(centers.shape[0]), cells[:, 0], cells[:, 1]] = 1.0
    return masks


class FixedMaskReadout(nn.Module):
    """Factorized readout with a fixed spatial mask: ``z[b,n] = sum_c w[n,c] sum_xy m[n,x,y] h[b,c,x,y] + b[n]``.

    ``mask`` (n,H,W) and ``centers`` (n,2, RF centres in image pixels) are buffers: saved with the model, never
    trained. Until :meth:`fit` (or :meth:`set_centers`) runs the mask is uniform and ``fitted`` is False.

    Args:
        in_shape: (C,H,W) of h_i, positive integers with H == W.
        outdims: number of neurons n, a positive integer.
        sigma: Gaussian mask standard deviation in image pixels, finite and > 0 (``"ridge-gaussian"`` only).
        image_size: side of the input image (32), a positive integer.
        init_noise: std of the initial feature weights, finite and >= 0.
        method: how :meth:`fit` makes the mask, one of :data:`METHODS` (module docstring).
        l1_weight: weight of :meth:`regularizer`, finite and >= 0.

    Every argument is checked (integers must be integers: 2.7 is refused, not truncated); errors name it.
    """

    def __init__(self, in_shape: Tuple[int, int, int], outdims: int, sigma: float = 3.0, image_size: int = 32,
                 init_noise: float = 1e-3, method: str = RIDGE_GAUSSIAN, l1_weight: float = 1.0):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown fixed-mask method {method!r}; valid: {', '.join(METHODS)}")
        self.method = method
        self.l1_weight = _args.real("l1_weight", l1_weight, minimum=0.0)
        c, h, w = _args.shape("in_shape", in_shape, 3, "(C, H, W)")
        if h != w:
            raise ValueError(f"in_shape must be a square feature map (C, H, W) with H == W, got {tuple(in_shape)}")
        self.in_shape = (c, h, w)
        self.outdims = outdims = _args.count("outdims", outdims)
        self.sigma = _positive("sigma", sigma)
        self.image_size = image_size = _args.count("image_size", image_size)
        init_noise = _args.real("init_noise", init_noise, minimum=0.0)
        self.features = nn.Parameter(torch.randn(outdims, c) * init_noise)
        self.bias = nn.Parameter(torch.zeros(outdims))
        self.register_buffer("mask", torch.full((outdims, h, w), 1.0 / (h * w)))
        self.register_buffer("centers", torch.full((outdims, 2), (image_size - 1) / 2.0))
        self.register_buffer("fitted", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        """x (B,C,H,W) with (C,H,W) = ``in_shape`` -> z (B,n)."""
        _validate.check_feature_map(x, self.in_shape, self.features)
        return factorized_readout(x, self.mask, self.features, self.bias)

    def set_centers(self, centers: Tensor) -> None:
        """Set the RF centres (n,2) in image pixels and rebuild the masks (Gaussian or one-hot) on h_i's grid."""
        if not isinstance(centers, Tensor) or centers.shape != (self.outdims, 2):
            got = tuple(centers.shape) if isinstance(centers, Tensor) else type(centers).__name__
            raise ValueError(f"centers must be a tensor of shape (outdims, 2) = ({self.outdims}, 2), got {got}")
        if not bool(torch.isfinite(centers).all()):
            raise ValueError("centers must be finite (RF centres in image pixels)")
        with torch.no_grad():
            self.centers.copy_(centers)
            if self.method == ENVELOPE_PEAK:
                self.mask.copy_(peak_masks(centers, self.in_shape[1], self.image_size))
            else:
                self.mask.copy_(gaussian_masks(centers, self.in_shape[1], self.image_size, self.sigma))
            self.fitted.fill_(True)

    def fit(self, images: Tensor, responses: Tensor) -> Tensor:
        """Estimate RF centres from training data (:mod:`daenr_fast.models.receptive_fields`, by ``method``) and
        set the masks from them; images (N,1,S,S), responses (N,n); returns the centres (n,2)."""
        from daenr_fast.models.receptive_fields import check_fit_inputs, envelope_peak_centers, estimate_rf_centers

        check_fit_inputs(images, responses, self.image_size, self.outdims)
        estimate = envelope_peak_centers if self.method == ENVELOPE_PEAK else estimate_rf_centers
        centers = estimate(images.cpu(), responses.cpu())
        self.set_centers(centers.to(self.mask.device))
        return centers

    def regularizer(self) -> Tensor:
        """``l1_weight * sum |w|`` over the feature weights (the mask is fixed)."""
        return self.features.abs().sum() * self.l1_weight

    def masks(self) -> Tensor:
        return self.mask.detach()
