"""``FullyConnectedReadout``: every neuron reads the whole flattened feature map (the paper's FC readout)."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from daenr_fast import _validate
from daenr_fast.nn import _args


class FullyConnectedReadout(nn.Module):
    """``z = W vec(h) + b``: h (B,C,H,W) -> z (B,n); W (n, C*H*W) initialised N(0, init_noise^2).

    Args:
        in_shape: (C,H,W) of the feature map, positive integers.
        outdims: number of neurons n, a positive integer.
        init_noise: std of the initial weights, finite and >= 0.

    Every argument is checked (integers must be integers: 2.7 is refused, not truncated); errors name it.
    """

    def __init__(self, in_shape: Tuple[int, int, int], outdims: int, init_noise: float = 1e-3):
        super().__init__()
        self.in_shape = _args.shape("in_shape", in_shape, 3, "(C, H, W)")
        self.outdims = _args.count("outdims", outdims)
        init_noise = _args.real("init_noise", init_noise, minimum=0.0)
        c, h, w = self.in_shape
        self.linear = nn.Linear(c * h * w, self.outdims)
        nn.init.normal_(self.linear.weight, std=init_noise)
        nn.init.zeros_(self.linear.bias)

    @property
    def bias(self) -> Tensor:
        return self.linear.bias

    def forward(self, x: Tensor) -> Tensor:
        """x (B,C,H,W) with (C,H,W) = ``in_shape`` -> z (B,n)."""
        _validate.check_feature_map(x, self.in_shape, self.linear.weight)
        return self.linear(x.flatten(1))

    def regularizer(self) -> Tensor:
        """``sum |W|`` (L1 sparsity of the weights)."""
        return self.linear.weight.abs().sum()

    def masks(self) -> Optional[Tensor]:
        """Spatial weight maps ``||W[n,:,x,y]||_2`` over channels -> (n,H,W)."""
        return self.linear.weight.detach().view(self.outdims, *self.in_shape).norm(dim=1)
