"""The decoder's input space with a Gaussian prior fitted to natural images: :class:`LatentSpace`.

The latent ``l`` of an image is what the autoencoder's decoder side starts from:

* CAE: ``l = z`` (B,100), the linear latent; decoded as ``decoder(from_latent(z))``;
* VAE: ``l = mu`` (B,100), the posterior mean (the eval-mode latent); decoded the same way;
* VQ-VAE: ``l = z_e`` (B,32,8,8) flattened, the pre-quantisation latent; decoded as
  ``decoder(post_quant(quantize(z_e)))`` with the quantiser's straight-through gradient.

Prior: the latents ``L`` (N,D) of the natural training images are centred and decomposed (thin SVD,
``L - mu = U S V^T``, mu the mean latent); in the principal components, scaled to unit variance over the images::

    l(w) = mu + V_k diag(s_k) w,        s_j = S_j / sqrt(N - 1)

so ``w`` (B,k) is standard normal over natural images, in the k leading components that explain
:data:`VARIANCE_KEPT` of the latents' variance (at most N / 2 of them, so that the Gaussian is fitted with two
images or more per dimension; the VQ-VAE's latent has more dimensions than there are images). The synthesis
optimises ``w`` inside the ball ``||w||_2 <= radius``, ``radius`` the
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
#: fraction of the natural latents' variance the kept principal components explain
VARIANCE_KEPT = 0.99
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
        if not s[0] > 0:
            raise ValueError("the latent prior needs natural images whose latents differ; they are all equal")
        explained = torch.cumsum(s**2, 0) / (s**2).sum()
        k = min(int(torch.searchsorted(explained, torch.tensor(VARIANCE_KEPT, dtype=s.dtype))) + 1,
                latents.shape[0] // 2, int((s > 0).sum()))
        self.components = vt[:k]                                       # (k, D)
        self.scale = s[:k] / np.sqrt(latents.shape[0] - 1)             # (k,)
        self.natural = self.whiten(latents)                            # (N, k)
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

    def latent(self, w: Tensor) -> Tensor:
        """w (B, k) -> latents (B, D): ``mu + V_k diag(s_k) w``."""
        return self._mean.to(w.device) + w @ self._basis.to(w.device)

    def decode_latent(self, latent: Tensor) -> Tensor:
        """Latents (B, D) -> decoded images (B,1,S,S) in [-1,1]: the autoencoder's own path after its latent."""
        ae = self.autoencoder
        if isinstance(ae, VQVAE):
            quantized, _ = ae.quantizer(latent.view(-1, ae.code_dim, *ae.code_shape[1:]))
            code = ae.post_quant(quantized)
        else:
            code = ae.from_latent(latent).view(-1, *ae.code_shape)
        return ae.decoder(code)

    def decode(self, w: Tensor) -> Tensor:
        """w (B, k) -> decoded images (B,1,S,S) in [-1,1]; differentiable in w."""
        return self.decode_latent(self.latent(w))

    @torch.no_grad()
    def project(self, w: Tensor) -> None:
        """In place: rows of w (B, k) outside the ball ``||w|| <= radius`` are scaled back onto it."""
        norm = w.norm(dim=1, keepdim=True)
        w.mul_(torch.clamp(self.radius / norm.clamp_min(1e-12), max=1.0))
