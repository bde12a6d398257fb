"""``FullyConnectedReadout``: every neuron reads the whole flattened feature map (the paper's FC readout)."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn


class FullyConnectedReadout(nn.Module):
    """``z = W vec(h) + b``: h (B,C,H,W) -> z (B,n); W (n, C*H*W) initialised N(0, init_noise^2)."""

    def __init__(self, in_shape: Tuple[int, int, int], outdims: int, init_noise: float = 1e-3):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.outdims = outdims
        self.linear = nn.Linear(self.in_shape[0] * self.in_shape[1] * self.in_shape[2], outdims)
        nn.init.normal_(self.linear.weight, std=init_noise)
        nn.init.zeros_(self.linear.bias)

    @property
    def bias(self) -> Tensor:
        return self.linear.bias

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h.flatten(1))

    def regularizer(self) -> Tensor:
        """``sum |W|`` (L1 sparsity of the weights)."""
        return self.linear.weight.abs().sum()

    def masks(self) -> Optional[Tensor]:
        """Spatial weight maps ``||W[n,:,x,y]||_2`` over channels -> (n,H,W)."""
        return self.linear.weight.detach().view(self.outdims, *self.in_shape).norm(dim=1)
