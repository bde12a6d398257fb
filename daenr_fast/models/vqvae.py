"""Vector-quantised VAE (VQ-VAE): an 8x8 grid of codes from a codebook of 256 vectors of dimension 32.

    h4 (B,48,8,8) -> 1x1 conv -> z_e (B,32,8,8) -> VectorQuantizer -> z_q (B,32,8,8) -> 1x1 conv -> ELU
                  -> (B,48,8,8) -> decoder

``z_q`` carries the straight-through gradient. The quantizer's loss (codebook + commitment
``beta ||z_e - sg[e]||^2``, beta = 0.25; with EMA codebook updates only the commitment term has a gradient) is
a mean over latent elements; it is multiplied by the number of latent elements per image (32*8*8) so that
``aux_losses["vq"]`` sits on the same per-image scale as the summed squared reconstruction error.

Dead codes are not restarted by default (van den Oord et al. 2017 describe no restarts): a code that no encoder
output comes near stays where it was initialised. ``restarts=True`` replaces every code whose EMA cluster size
falls below :data:`daenr_fast.nn.vector_quantizer.DEAD_CODE_THRESHOLD` by a random encoder output of the batch.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from daenr_fast import nn as dnn
from daenr_fast.models.autoencoder import Autoencoder
from daenr_fast.nn.vector_quantizer import DEAD_CODE_THRESHOLD


class VQVAE(Autoencoder):
    """VQ-VAE with ``num_codes`` codes of dimension ``code_dim`` (paper: "32 x 256"); returns ``aux_losses["vq"]``.

    Args:
        num_codes: codebook size K.
        code_dim: code dimension D.
        commitment: commitment weight beta of the VQ-VAE loss.
        ema: update the codebook by exponential moving averages (True) or by its gradient.
        decay: EMA decay.
        restarts: restart dead codes from batch vectors (module docstring); False as in the paper's VQ-VAE.
    """

    aux_terms = ("vq",)

    def __init__(self, num_codes: int = 256, code_dim: int = 32, commitment: float = 0.25, ema: bool = True,
                 decay: float = 0.99, channels: int = 48, image_size: int = 32, restarts: bool = False):
        super().__init__(channels, image_size)
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.pre_quant = nn.Conv2d(channels, code_dim, kernel_size=1)
        self.quantizer = dnn.VectorQuantizer(num_codes=num_codes, dim=code_dim, beta=commitment, ema=ema,
                                             decay=decay,
                                             dead_code_threshold=DEAD_CODE_THRESHOLD if restarts else 0.0)
        self.post_quant = nn.Sequential(nn.Conv2d(code_dim, channels, kernel_size=1), nn.ELU())
        self._elements = code_dim * math.prod(self.code_shape[1:])

    def bottleneck(self, h4: Tensor):
        quantized, info = self.quantizer(self.pre_quant(h4))
        stats = {k: info[k] for k in ("perplexity", "usage") if k in info}
        return self.post_quant(quantized), {"vq": info["loss"] * self._elements}, stats
