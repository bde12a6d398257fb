"""The decoder's input space with a Gaussian prior fitted to natural images: :class:`LatentSpace`.

The latent ``l`` of an image is what the autoencoder's decoder side starts from:

* CAE: ``l = z`` (B,100), the linear latent; decoded as ``decoder(from_latent(z))``;
* VAE: ``l = mu`` (B,100), the posterior mean (the eval-mode latent); decoded the same way;
* VQ-VAE: ``l = z_e`` (B,32,8,8) flattened, the pre-quantisation latent; decoded as
  ``decoder(post_quant(quantize(z_e)))`` with the quantiser's straight-through gradient.

Prior: the latents ``L`` (N,D) of the natural training images are centred and decomposed (thin SVD,
``L - mu = U S V^T``, mu the mean latent); in the principal components, scaled to unit variance over the images::

    l(w) = mu + V_k diag(s_k) w,        s_j = S_j / sqrt(N - 1)

so ``w`` (B,k) is standard normal over natural images, in the k non-degenerate components (``S_j > 1e-4 S_0``;
k <= N - 1). The synthesis optimises ``w`` inside the ball ``||w||_2 <= radius``, ``radius`` the
:data:`NATURAL_QUANTILE` quantile of the natural images' ``||w||``: a latent as probable under the fitted
Gaussian as 95% of natural images, and in the subspace they span.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from daenr_fast.models.cae import CAE
from daenr_fast.models.vae import VAE
from daenr_fast.models.vqvae import VQVAE

#: quantile of the natural images' norms (latent Mahalanobis norm, pixel contrast) used as the bound
NATURAL_QUANTILE = 0.95
#: components with singular values below this fraction of the largest are dropped
RANK_TOLERANCE = 1e-4
ENCODE_BATCH = 256


class LatentSpace:
    """Whitened coordinates ``w`` of an autoencoder's decoder input (see the module docstring).

    Args:
        autoencoder: a trained :class:`CAE`, :class:`VAE` or :class:`VQVAE` (eval mode).
        images: natural images (N,1,S,S) on the model's scale, N >= 2 (the run's training images).
    """

    def __init__(self, autoencoder, images: Tensor):
        if not isinstance(autoencoder, (CAE, VAE, VQVAE)):
            raise TypeError(f"no decoder latent for {type(autoencoder).__name__}")
        if images.shape[0] < 2:
            raise ValueError(f"the latent prior needs at least 2 natural images, got {images.shape[0]}")
        self.autoencoder = autoencoder
        latents = self.encode(images).double()
        self.mean = latents.mean(0)
        _, s, vt = torch.linalg.svd(latents - self.mean, full_matrices=False)
        keep = s > RANK_TOLERANCE * s[0]
        scale = s[keep] / np.sqrt(latents.shape[0] - 1)
        self.components = vt[keep]                      # (k, D)
        self.scale = scale                              # (k,)
        self.natural = self.whiten(latents)             # (N, k)
        self.radius = float(torch.quantile(self.natural.norm(dim=1), NATURAL_QUANTILE))
        dtype = next(autoencoder.parameters()).dtype
        self._basis = (self.components * self.scale[:, None]).to(dtype)   # (k, D)
        self._mean = self.mean.to(dtype)

    @property
    def dim(self) -> int:
        """k, the number of whitened coordinates."""
        return int(self.components.shape[0])

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Latents (N, D) of images (N,1,S,S)."""
        ae = self.autoencoder
        device = next(ae.parameters()).device
        out = []
        for i in range(0, images.shape[0], ENCODE_BATCH):
            h4 = ae.encoder(images[i:i + ENCODE_BATCH].to(device).float())[-1]
            if isinstance(ae, VQVAE):
                out.append(ae.pre_quant(h4).flatten(1))
            elif isinstance(ae, VAE):
                out.append(ae.posterior(h4)[0])
            else:
                out.append(ae.to_latent(h4.flatten(1)))
        return torch.cat(out).cpu()

    def whiten(self, latents: Tensor) -> Tensor:
        """Latents (N, D) -> w (N, k) (the projection onto the kept components)."""
        return ((latents.double() - self.mean) @ self.components.T) / self.scale

    def decode(self, w: Tensor) -> Tensor:
        """w (B, k) -> decoded images (B,1,S,S) in [-1,1]; differentiable in w."""
        ae = self.autoencoder
        latent = self._mean.to(w.device) + w @ self._basis.to(w.device)
        if isinstance(ae, VQVAE):
            z_e = latent.view(-1, ae.code_dim, *ae.code_shape[1:])
            quantized, _ = ae.quantizer(z_e)
            code = ae.post_quant(quantized)
        else:
            code = ae.from_latent(latent).view(-1, *ae.code_shape)
        return ae.decoder(code)

    @torch.no_grad()
    def project(self, w: Tensor) -> None:
        """In place: rows of w (B, k) outside the ball ``||w|| <= radius`` are scaled back onto it."""
        norm = w.norm(dim=1, keepdim=True)
        w.mul_(torch.clamp(self.radius / norm.clamp_min(1e-12), max=1.0))
