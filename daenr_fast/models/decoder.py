"""The transposed-convolution decoder (paper section 4.1): 48DC(s1,k3)-48DC(s2,k3)-48DC(s1,k3)-1DC(s2,k3), tanh.

    z (B,48,8,8) -> 48DC(s1) -> (B,48,8,8) -> 48DC(s2) -> (B,48,16,16) -> 48DC(s1) -> (B,48,16,16)
                 -> 1DC(s2) -> tanh -> x_hat (B,1,32,32) in [-1,1]

Hidden blocks are ``ConvTranspose2d(k=3, padding=1) -> BatchNorm2d -> ELU``; the stride-2 layers use
``output_padding=1`` so they exactly double the size and the decoder inverts the encoder's 32 -> 8 reduction.
"""
from __future__ import annotations

from torch import Tensor, nn

#: Strides of the four decoder layers (48DC13-48DC23-48DC13-1DC23 in the paper's notation).
DECODER_STRIDES = (1, 2, 1, 2)


def _deconv(in_channels: int, out_channels: int, stride: int, bias: bool = False) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                              output_padding=stride - 1, bias=bias)


class Decoder(nn.Module):
    """Maps the (B,48,8,8) code map back to an image (B,out_channels,32,32) in [-1,1]."""

    def __init__(self, channels: int = 48, out_channels: int = 1):
        super().__init__()
        layers = []
        for stride in DECODER_STRIDES[:-1]:
            layers += [_deconv(channels, channels, stride), nn.BatchNorm2d(channels), nn.ELU()]
        layers += [_deconv(channels, out_channels, DECODER_STRIDES[-1], bias=True), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """z (B,48,8,8) -> x_hat (B,1,32,32)."""
        return self.net(z)
