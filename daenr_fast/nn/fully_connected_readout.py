"""``FullyConnectedReadout``: every neuron reads the whole flattened feature map (the paper's FC readout)."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from daenr_fast import _validate
from daenr_fast.nn import _args


class FullyConnectedReadout(nn.Module):
    """``z = W dropout(vec(h)) + b``: h (B,C,H,W) -> z (B,n); W (n, C*H*W) initialised N(0, init_noise^2).

    Penalty (:meth:`regularizer`): ``l1_weight * sum |W| + l2_weight * 1/2 sum W^2``.

    Args:
        in_shape: (C,H,W) of the feature map, positive integers.
        outdims: number of neurons n, a positive integer.
        init_noise: std of the initial weights, finite and >= 0.
        dropout: probability in [0, 1) of zeroing each input feature in training (inverted dropout: the kept ones
            are scaled by 1/(1-p); nothing is dropped in eval mode). 0 = no dropout.
        l1_weight, l2_weight: weights of the L1 and L2 terms of :meth:`regularizer`, finite and >= 0.

    Every argument is checked (integers must be integers: 2.7 is refused, not truncated); errors name it.
    """

    def __init__(self, in_shape: Tuple[int, int, int], outdims: int, init_noise: float = 1e-3, dropout: float = 0.0,
                 l1_weight: float = 1.0, l2_weight: float = 0.0):
        super().__init__()
        self.in_shape = _args.shape("in_shape", in_shape, 3, "(C, H, W)")
        self.outdims = _args.count("outdims", outdims)
        init_noise = _args.real("init_noise", init_noise, minimum=0.0)
        dropout = _args.real("dropout", dropout, minimum=0.0)
        if dropout >= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.l1_weight = _args.real("l1_weight", l1_weight, minimum=0.0)
        self.l2_weight = _args.real("l2_weight", l2_weight, minimum=0.0)
        c, h, w = self.in_shape
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(c * h * w, self.outdims)
        nn.init.normal_(self.linear.weight, std=init_noise)
        nn.init.zeros_(self.linear.bias)

    @property
    def bias(self) -> Tensor:
        return self.linear.bias

    def forward(self, x: Tensor) -> Tensor:
        """x (B,C,H,W) with (C,H,W) = ``in_shape`` -> z (B,n)."""
        _validate.check_feature_map(x, self.in_shape, self.linear.weight)
        return self.linear(self.dropout(x.flatten(1)))

    def regularizer(self) -> Tensor:
        """``l1_weight * sum |W| + l2_weight * 1/2 sum W^2`` (the bias is not penalised)."""
        weight = self.linear.weight
        penalty = weight.abs().sum() * self.l1_weight
        if self.l2_weight:
            penalty = penalty + weight.pow(2).sum() * (0.5 * self.l2_weight)
        return penalty

    def masks(self) -> Optional[Tensor]:
        """Spatial weight maps ``||W[n,:,x,y]||_2`` over channels -> (n,H,W)."""
        return self.linear.weight.detach().view(self.outdims, *self.in_shape).norm(dim=1)
