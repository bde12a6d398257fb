"""The pixel-space baseline (as MEI methods do): gradient ascent on the image itself, smoothed and bounded.

    x_0 = a natural training image (projected)
    g   = G_sigma * dL/dx                     (gradient blurred with a Gaussian of sigma PIXEL_BLUR_SIGMA px)
    x  <- x - lr * g / rms(g)                 (normalised step, per image)
    x  <- clip(x, -1, 1);  x <- m + (x - m) * min(1, budget / ||x - m||_2)

``m`` is the mean pixel of the natural training images and ``budget`` the :data:`~.latent.NATURAL_QUANTILE`
quantile of their ``||x_i - m||_2``: the image can have at most the contrast energy of 95% of natural images, in
the model's input range. Works on any model with a readout, the CNN baselines included.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from daenr_fast.synthesis.latent import NATURAL_QUANTILE

NAME = "pixel"
#: step length in pixel-rms units of the [-1,1] scale
LEARNING_RATE = 0.05
#: std (pixels of the 32 x 32 image) of the Gaussian that smooths the gradient
PIXEL_BLUR_SIGMA = 1.0


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B,1,H,W) with reflected borders (kernel radius ceil(3 sigma))."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


class PixelMethod:
    """The pixel method for one run (its contrast budget from the run's training images)."""

    name = NAME

    def __init__(self, run, lr: float = LEARNING_RATE, blur_sigma: float = PIXEL_BLUR_SIGMA):
        self.lr, self.blur_sigma = lr, blur_sigma
        images, _ = run.splits.tensors("train")
        self.images = images
        self.level = float(images.mean())
        norms = (images - self.level).flatten(1).norm(dim=1)
        self.budget = float(torch.quantile(norms.double(), NATURAL_QUANTILE))
        self.device = run.device

    def project(self, x: Tensor) -> None:
        """In place: clip to [-1,1], then shrink ``x - m`` onto the contrast budget where it is larger."""
        x.clamp_(-1.0, 1.0)
        d = x - self.level
        norm = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        x.copy_(self.level + d * torch.clamp(self.budget / norm.clamp_min(1e-12), max=1.0))

    def start(self, image_index: Tensor):
        """Starting point for the training images ``image_index`` (B,): (param (B,1,S,S), update)."""
        x = self.images[image_index].float().to(self.device).clone()
        self.project(x)
        x.requires_grad_(True)

        def update(param: Tensor) -> None:
            g = gaussian_blur(param.grad, self.blur_sigma)
            rms = g.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
            param.sub_(self.lr * g / rms.clamp_min(1e-12))
            self.project(param)

        return x, update

    def to_image(self, x: Tensor) -> Tensor:
        return x
