"""The DAE-NR joint model and the two kinds of baselines, behind one interface.

* :class:`DAENR` (``cae-fr``, ..., ``vq-vae-fm``): an autoencoder whose encoder layer h_i also feeds a readout,

      x -> Encoder -> h_1..h_4 -> bottleneck -> Decoder -> x_hat
                          \\-> h_i -> readout -> z (B,n)       (rates = act(z), default elu(z)+1)

* :class:`AutoencoderBaseline` (``cae``, ``vae``, ``vq-vae``): the autoencoder alone (reconstruction only).
* :class:`CNNBaseline` (``cnn-fr``, ``cnn-fc``, ``cnn-fm``): the encoder up to h_i plus the readout
  (response loss only).

All return a :class:`ModelOutput`; absent parts are ``None``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from daenr_fast.models.autoencoder import Autoencoder
from daenr_fast.models.encoder import Encoder, check_layer
from daenr_fast.models.readouts import readout_masks


@dataclass
class ModelOutput:
    """Forward result of every registry model.

    Attributes:
        reconstruction: x_hat (B,1,32,32) in [-1,1], or None for the CNN baselines.
        response: readout pre-activation z (B,n), or None for the autoencoder baselines.
        aux_losses: unweighted extra loss terms by name (``kl``, ``vq``), per-image scale.
        info: diagnostics (VQ perplexity and code usage).
    """

    reconstruction: Optional[Tensor]
    response: Optional[Tensor]
    aux_losses: Dict[str, Tensor] = field(default_factory=dict)
    info: Dict[str, Tensor] = field(default_factory=dict)


class _Model(nn.Module):
    """Shared metadata and helpers of the registry models."""

    name: str = ""
    layer: int = 0

    @property
    def has_reconstruction(self) -> bool:
        return self._modules.get("autoencoder") is not None

    @property
    def has_readout(self) -> bool:
        return self._head() is not None

    def _head(self) -> Optional[nn.Module]:
        return self._modules.get("readout")

    @property
    def aux_terms(self) -> Tuple[str, ...]:
        ae = self._modules.get("autoencoder")
        return ae.aux_terms if ae is not None else ()

    def readout_regularizer(self) -> Optional[Tensor]:
        """The readout's L1 sparsity penalty (scalar), or None without a readout."""
        head = self._head()
        return None if head is None else head.regularizer()

    def masks(self) -> Optional[Tensor]:
        """The readout's spatial masks (n,H_i,W_i) (FR learned, FM fixed, FC weight norms), or None."""
        head = self._head()
        return None if head is None else readout_masks(head)


class DAENR(_Model):
    """Autoencoder + readout on h_layer (the paper's DAE-NR_i)."""

    def __init__(self, name: str, autoencoder: Autoencoder, readout: nn.Module, layer: int):
        super().__init__()
        self.name = name
        self.layer = check_layer(layer)
        self.autoencoder = autoencoder
        self.readout = readout

    def forward(self, x: Tensor) -> ModelOutput:
        out = self.autoencoder(x)
        z = self.readout(out.features[self.layer - 1])
        return ModelOutput(out.reconstruction, z, out.aux_losses, out.info)


class AutoencoderBaseline(_Model):
    """Autoencoder only (CAE / VAE / VQ-VAE baselines); ``response`` is None."""

    def __init__(self, name: str, autoencoder: Autoencoder):
        super().__init__()
        self.name = name
        self.autoencoder = autoencoder

    def forward(self, x: Tensor) -> ModelOutput:
        out = self.autoencoder(x)
        return ModelOutput(out.reconstruction, None, out.aux_losses, out.info)


class CNNBaseline(_Model):
    """Encoder blocks 1..layer + readout (CNN-FR/FC/FM baselines); ``reconstruction`` is None."""

    def __init__(self, name: str, encoder: Encoder, readout: nn.Module, layer: int):
        super().__init__()
        self.name = name
        self.layer = check_layer(layer)
        if encoder.depth != layer:
            raise ValueError(f"CNN baseline encoder must have depth {layer}, got {encoder.depth}")
        self.encoder = encoder
        self.readout = readout

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(None, self.readout(self.encoder(x)[-1]))
