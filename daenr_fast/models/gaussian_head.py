"""The model zoo's Gaussian readout head (GR; not in the paper): :class:`daenr_fast.nn.FullGaussian2d` with each
neuron's initial position taken from its receptive field.

    z[b,n] = sum_c f[c,n] * bilinear(h[b,c], clamp(mu[n] + sigma[n] eps, -1, 1)) + bias[n]
    eps ~ N(0, I) in training, eps = 0 in eval;  h (B,C,H,W) -> z (B,n)

Positions are grid_sample coordinates (x = column, y = row, in [-1, 1]). With ``align_corners=True`` (the module's
convention) -1 and +1 are the centres of the first and the last cell of the H x W map. Cell k of a layer of side g
covers the image pixels around ``(k + 1/2) S/g - 1/2`` (S = 32, pixel centres at integers), so an RF centre ``c``
(row or column, image pixels) sits at cell ``k(c) = (c + 1/2) g/S - 1/2`` and at the grid coordinate

    u(c) = 2 k(c) / (g - 1) - 1          (clamped to [-1, 1]; u = 0 on a 1-cell axis)

``init="rf"`` sets ``mu`` to ``(u(col), u(row))`` of the ridge-fit RF centre
(:func:`daenr_fast.models.receptive_fields.estimate_rf_centers`, the FM readout's estimate) when the trainer calls
:meth:`GaussianReadout.fit`; ``init="random"`` keeps neuralpredictors' ``mu ~ U(-init_mu_range, init_mu_range)``.
The other settings are the Sensorium 2022 baseline's: a full 2x2 sigma initialised U(-0.1, 0.1), ``mu`` range 0.3,
feature weights 1/C, one position sample per image in training.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from daenr_fast.models.receptive_fields import check_fit_inputs, estimate_rf_centers
from daenr_fast.nn import _args
from daenr_fast.nn.gaussian_readout import FullGaussian2d

#: how :meth:`GaussianReadout.fit` sets the initial positions
GR_INITS = ("rf", "random")
#: neuralpredictors arguments of the head (the Sensorium 2022 baseline's values)
GAUSS_TYPE, INIT_MU_RANGE, INIT_SIGMA = "full", 0.3, 0.1


def check_gr_init(init: str) -> str:
    if init not in GR_INITS:
        raise ValueError(f"unknown Gaussian readout init {init!r} (gr_init); valid: {', '.join(GR_INITS)}")
    return init


def pixels_to_grid(centers: Tensor, grid: Tuple[int, int], image_size: int = 32) -> Tensor:
    """RF centres (n,2) as (row, col) image pixels -> positions (n,2) as (x, y) grid_sample coordinates
    (align_corners=True) on a feature map of spatial size ``grid`` = (H, W); see the module docstring."""
    out = []
    for axis, size in ((1, grid[1]), (0, grid[0])):  # x follows the column, y the row
        cell = (centers[:, axis].double() + 0.5) * (size / image_size) - 0.5
        out.append(2 * cell / (size - 1) - 1 if size > 1 else torch.zeros_like(cell))
    return torch.stack(out, 1).clamp(-1, 1).float()


class GaussianReadout(FullGaussian2d):
    """:class:`~daenr_fast.nn.FullGaussian2d` (full sigma, bias) with an RF-based initial position per neuron.

    Args:
        in_shape: (C,H,W) of h_i.
        outdims: number of neurons n.
        init: one of :data:`GR_INITS` (module docstring).
        l1_weight: weight of the feature L1 penalty (:meth:`regularizer`, neuralpredictors' ``feature_reg_weight``).
        image_size: side of the input image, for the pixel-to-grid conversion.
    """

    def __init__(self, in_shape: Tuple[int, int, int], outdims: int, init: str = GR_INITS[0], l1_weight: float = 1.0,
                 image_size: int = 32):
        outdims = _args.count("outdims", outdims)
        super().__init__(in_shape, outdims, bias=True, init_mu_range=INIT_MU_RANGE, init_sigma=INIT_SIGMA,
                         gauss_type=GAUSS_TYPE, mean_activity=torch.zeros(outdims),
                         feature_reg_weight=_args.real("l1_weight", l1_weight, minimum=0.0))
        self.init = check_gr_init(init)
        self.image_size = _args.count("image_size", image_size)

    def fit(self, images: Tensor, responses: Tensor) -> Optional[Tensor]:
        """``init="rf"``: estimate the RF centres (n,2, image pixels) from images (N,1,S,S) and responses (N,n),
        move ``mu`` to them and return them; ``init="random"``: change nothing and return None."""
        if self.init == "random":
            return None
        size = self.image_size
        check_fit_inputs(images, responses, size, self.outdims)
        centers = estimate_rf_centers(images.cpu(), responses.cpu())
        with torch.no_grad():
            self._mu.copy_(pixels_to_grid(centers, self._shape[1:], size).view_as(self._mu))
        return centers

    def masks(self) -> Tensor:
        """Bilinear weights (n,H,W) of each neuron's mean position on the feature map."""
        _, h, w = self._shape
        basis = torch.eye(h * w, dtype=self._mu.dtype, device=self._mu.device).view(h * w, 1, h, w)
        grid = self.grid.detach().view(1, 1, self.outdims, 2).expand(h * w, 1, self.outdims, 2)
        weights = F.grid_sample(basis, grid, align_corners=self.align_corners)  # (H*W, 1, 1, n)
        return weights.view(h, w, self.outdims).permute(2, 0, 1).contiguous()
