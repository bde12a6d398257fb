"""The convolutional encoder shared by every DAE-NR model (paper section 4.1).

    x (B,1,32,32) -> 48C(s2,k3) -> h1 (B,48,16,16) -> 48C(s1,k3) -> h2 (B,48,16,16)
                  -> 48C(s2,k3) -> h3 (B,48,8,8)   -> 48C(s1,k3) -> h4 (B,48,8,8)

Each block is ``Conv2d(k=3, padding=1) -> BatchNorm2d -> ELU``; padding 1 makes a stride-1 block keep the size
and a stride-2 block halve it exactly, so h_i has the spatial sizes the paper's readouts assume.
"""
from __future__ import annotations

from typing import List, Tuple

from torch import Tensor, nn

#: Strides of the four encoder blocks (48C23-48C13-48C23-48C13 in the paper's notation).
ENCODER_STRIDES = (2, 1, 2, 1)
LAYERS = (1, 2, 3, 4)


def check_layer(layer) -> int:
    """Return ``layer`` as an int in 1..4 or raise a ``ValueError`` naming the valid layers."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer not in LAYERS:
        raise ValueError(f"layer must be one of {list(LAYERS)} (the readout taps h_layer), got {layer!r}")
    return layer


def feature_shape(layer: int, channels: int = 48, image_size: int = 32) -> Tuple[int, int, int]:
    """Shape (C,H,W) of h_layer for a square ``image_size`` input: (48,16,16) for h1/h2, (48,8,8) for h3/h4."""
    check_layer(layer)
    size = image_size
    for stride in ENCODER_STRIDES[:layer]:
        size = (size + stride - 1) // stride
    return (channels, size, size)


class ConvBlock(nn.Sequential):
    """``Conv2d(k=3, stride, padding=1) -> BatchNorm2d -> ELU``: (B,C_in,H,W) -> (B,C_out,H/stride,W/stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ELU(),
        )


class Encoder(nn.Module):
    """The first ``depth`` encoder blocks; ``forward`` returns the list [h1, ..., h_depth].

    Args:
        in_channels: image channels (1 for the paper's grey images).
        channels: filters per block (48 in the paper).
        depth: number of blocks kept (4 for an autoencoder; i for the readout-only CNN-*i baselines).
    """

    def __init__(self, in_channels: int = 1, channels: int = 48, depth: int = 4):
        super().__init__()
        check_layer(depth)
        self.channels = channels
        self.depth = depth
        ins = [in_channels] + [channels] * (depth - 1)
        self.blocks = nn.ModuleList(ConvBlock(i, channels, s) for i, s in zip(ins, ENCODER_STRIDES[:depth]))

    def forward(self, x: Tensor) -> List[Tensor]:
        """x (B,C_in,32,32) -> [h1 (B,48,16,16), h2 (B,48,16,16), h3 (B,48,8,8), h4 (B,48,8,8)][:depth]."""
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features
