"""Synthesis through the decoder: optimise the whitened decoder input ``w`` of :class:`~.latent.LatentSpace`.

    image(w) = decode(mu + V_k diag(s_k) w),   w_0 = whitened latent of a natural training image
    w <- Adam step on the objective's loss, then w <- w * min(1, radius / ||w||)

The image stays on the decoder's output manifold, and its latent inside the region natural images occupy.
"""
from __future__ import annotations

import torch
from torch import Tensor

from daenr_fast.synthesis.latent import LatentSpace

NAME = "decoder"
#: Adam learning rate on w (w is in units of the natural images' standard deviation per component)
LEARNING_RATE = 0.1


class DecoderMethod:
    """The decoder method for one run (fits its latent prior on the run's training images).

    Raises:
        ValueError: naming ``--method`` when the run's model has no decoder (a CNN baseline).
    """

    name = NAME

    def __init__(self, run, lr: float = LEARNING_RATE):
        if not run.has_decoder:
            raise ValueError(f"--method decoder: run {run.run_dir} ({run.label}) has no decoder; use "
                             "--method pixel, or a joint model's run")
        self.lr = lr
        images, _ = run.splits.tensors("train")
        self.space = LatentSpace(run.model.autoencoder, images)
        self.device = run.device

    def start(self, image_index: Tensor):
        """Starting point for the training images ``image_index`` (B,): (param (B,k), update)."""
        w = self.space.natural[image_index].float().to(self.device).clone()
        self.space.project(w)
        w.requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=self.lr)

        def update(param: Tensor) -> None:
            optimizer.step()
            self.space.project(param)

        return w, update

    def to_image(self, w: Tensor) -> Tensor:
        return self.space.decode(w)
