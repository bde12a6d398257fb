"""``FixedMaskReadout``: the factorized readout with a fixed (not learned) Gaussian mask per neuron (the paper's FM)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from daenr_fast.ops.factorized_readout import factorized_readout


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
    if sigma <= 0:
        raise ValueError(f"fm_sigma must be positive (pixels), got {sigma}")
    coords = (torch.arange(grid, dtype=torch.float32) + 0.5) * (image_size / grid) - 0.5
    rows = coords.view(1, grid, 1) - centers[:, 0].float().view(-1, 1, 1)
    cols = coords.view(1, 1, grid) - centers[:, 1].float().view(-1, 1, 1)
    masks = torch.exp(-(rows.pow(2) + cols.pow(2)) / (2 * sigma ** 2))
    return masks / masks.flatten(1).sum(1).view(-1, 1, 1)


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
        return factorized_readout(h, self.mask, self.features, self.bias)

    def set_centers(self, centers: Tensor) -> None:
        """Set the RF centres (n,2) in image pixels and rebuild the Gaussian masks on h_i's grid."""
        if centers.shape != (self.outdims, 2):
            raise ValueError(f"centers must be ({self.outdims},2), got {tuple(centers.shape)}")
        with torch.no_grad():
            self.centers.copy_(centers)
            self.mask.copy_(gaussian_masks(centers, self.in_shape[1], self.image_size, self.sigma))
            self.fitted.fill_(True)

    def fit(self, images: Tensor, responses: Tensor) -> Tensor:
        """Estimate RF centres from training data (ridge regression, :mod:`daenr_fast.models.receptive_fields`)
        and set the masks from them; images (N,1,S,S), responses (N,n); returns the centres (n,2)."""
        if images.shape[-1] != self.image_size:
            raise ValueError(f"images must be {self.image_size}x{self.image_size}, got {tuple(images.shape)}")
        from daenr_fast.models.receptive_fields import estimate_rf_centers

        centers = estimate_rf_centers(images.cpu(), responses.cpu())
        self.set_centers(centers.to(self.mask.device))
        return centers

    def regularizer(self) -> Tensor:
        """``sum |w|`` over the feature weights (the mask is fixed)."""
        return self.features.abs().sum()

    def masks(self) -> Tensor:
        return self.mask.detach()
