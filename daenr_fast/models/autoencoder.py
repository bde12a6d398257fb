"""Common structure of the three autoencoders: encoder -> bottleneck after h4 -> decoder.

The paper taps the readout at h_i but also states a latent dimension of 100 for CAE and VAE; both hold here:
the encoder's h1..h4 are the taps, and the bottleneck sits between h4 and the decoder::

    x -> Encoder -> [h1, h2, h3, h4] -> bottleneck(h4) -> code map (B,48,8,8) -> Decoder -> x_hat

Subclasses implement :meth:`Autoencoder.bottleneck`, which also returns the extra loss terms of the model
(KL for the VAE, codebook + commitment for the VQ-VAE) on the per-image scale (summed over latent elements,
averaged over the batch), so they add to the per-image summed squared error on a common footing.
"""
from __future__ import annotations

import abc

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from torch import Tensor, nn

from daenr_fast.models.decoder import Decoder
from daenr_fast.models.encoder import Encoder


@dataclass
class AutoencoderOutput:
    """What an autoencoder's forward returns.

    Attributes:
        reconstruction: x_hat (B,1,32,32) in [-1,1].
        features: [h1, h2, h3, h4], each (B,48,H_i,W_i).
        aux_losses: extra unweighted loss terms by name (scalars), e.g. ``{"kl": ...}`` or ``{"vq": ...}``.
        info: diagnostics that are not losses (VQ perplexity, code usage, ...).
    """

    reconstruction: Tensor
    features: List[Tensor]
    aux_losses: Dict[str, Tensor] = field(default_factory=dict)
    info: Dict[str, Tensor] = field(default_factory=dict)


class Autoencoder(nn.Module, abc.ABC):
    """Encoder (4 blocks) + model-specific bottleneck + decoder; see the module docstring."""

    #: names of the extra loss terms :meth:`bottleneck` returns (empty for the CAE)
    aux_terms: Tuple[str, ...] = ()

    def __init__(self, channels: int = 48, image_size: int = 32):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (the encoder halves it twice), got {image_size}")
        self.channels = channels
        self.image_size = image_size
        self.code_shape = (channels, image_size // 4, image_size // 4)
        self.encoder = Encoder(1, channels, depth=4)
        self.decoder = Decoder(channels, 1)

    def _dense_latent(self, latent_dim: int, outputs_per_latent: int = 1) -> Tuple[nn.Linear, nn.Module]:
        """The layers of a vector latent after h4: flattened h4 -> ``outputs_per_latent * latent_dim`` values, and
        z (B, latent_dim) -> Linear -> ELU -> back to h4's size (B, C*H*W)."""
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
        flat = self.code_shape[0] * self.code_shape[1] * self.code_shape[2]
        into = nn.Linear(flat, outputs_per_latent * latent_dim)
        return into, nn.Sequential(nn.Linear(latent_dim, flat), nn.ELU())

    @abc.abstractmethod
    def bottleneck(self, h4: Tensor) -> Tuple[Tensor, Dict[str, Tensor], Dict[str, Tensor]]:
        """h4 (B,48,8,8) -> (code map (B,48,8,8) for the decoder, aux losses, info)."""

    def forward(self, x: Tensor) -> AutoencoderOutput:
        """x (B,1,32,32) in [-1,1] -> :class:`AutoencoderOutput`."""
        features = self.encoder(x)
        code, aux, info = self.bottleneck(features[-1])
        return AutoencoderOutput(self.decoder(code), features, aux, info)
