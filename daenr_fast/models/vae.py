"""Variational autoencoder (VAE): Gaussian posterior with a 100-dimensional latent, N(0, I) prior.

    h4 -> flatten (B,3072) -> Linear -> [mu, log sigma^2] (B,2x100)
    z = mu + sigma * eps, eps ~ N(0, I)   (training; z = mu in eval mode)
    z -> Linear -> ELU -> (B,48,8,8) -> decoder

The ELBO's KL term per image is ``KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)``, averaged over the
batch; with the per-image squared error as the reconstruction term the loss is the negative ELBO of a Gaussian
likelihood (up to constants).
"""
from __future__ import annotations

import torch
from torch import Tensor

from daenr_fast.models.autoencoder import Autoencoder

#: clamp on log sigma^2 so exp() cannot overflow early in training
LOGVAR_RANGE = (-20.0, 10.0)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the latent (dim 1), averaged over the batch -> scalar."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()


class VAE(Autoencoder):
    """VAE with reparameterised sampling; returns ``aux_losses["kl"]``."""

    aux_terms = ("kl",)

    def __init__(self, latent_dim: int = 100, channels: int = 48, image_size: int = 32):
        super().__init__(channels, image_size)
        self.latent_dim = latent_dim
        self.to_posterior, self.from_latent = self._dense_latent(latent_dim, outputs_per_latent=2)

    def posterior(self, h4: Tensor):
        """h4 (B,48,8,8) -> (mu (B,latent), logvar (B,latent))."""
        mu, logvar = self.to_posterior(h4.flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def bottleneck(self, h4: Tensor):
        mu, logvar = self.posterior(h4)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.from_latent(z).view(-1, *self.code_shape), {"kl": gaussian_kl(mu, logvar)}, {}
