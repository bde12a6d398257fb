"""Convolutional autoencoder (CAE) with a 100-dimensional linear latent after h4.

    h4 (B,48,8,8) -> flatten (B,3072) -> Linear -> z (B,100) -> Linear -> ELU -> (B,48,8,8) -> decoder
"""
from __future__ import annotations

from torch import Tensor

from daenr_fast.models.autoencoder import Autoencoder


class CAE(Autoencoder):
    """Deterministic autoencoder; loss is the squared reconstruction error alone (paper Eq. 4)."""

    def __init__(self, latent_dim: int = 100, channels: int = 48, image_size: int = 32):
        super().__init__(channels, image_size)
        self.latent_dim = latent_dim
        self.to_latent, self.from_latent = self._dense_latent(latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        """x (B,1,32,32) -> z (B,latent_dim)."""
        return self.to_latent(self.encoder(x)[-1].flatten(1))

    def bottleneck(self, h4: Tensor):
        z = self.to_latent(h4.flatten(1))
        return self.from_latent(z).view(-1, *self.code_shape), {}, {}
