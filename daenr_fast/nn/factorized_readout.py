"""``FactorizedReadout``: a drop-in, fused replacement for neuralpredictors' ``FullFactorized2d``."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from daenr_fast.ops.factorized_readout import factorized_readout


class FactorizedReadout(nn.Module):
    """Factorized readout: each neuron reads a feature map through a spatial mask times a feature vector.

        y[b,n] = sum_c features[n,c] * sum_{h,w} normalized_spatial[n,h,w] * x[b,c,h,w] + bias[n]

    Same constructor arguments, parameter names (``spatial`` (N,H,W), ``_features`` (N,C), ``bias`` (N,)) and
    properties as neuralpredictors' ``FullFactorized2d`` (aliases ``SpatialXFeatureLinear``, ``FullSXF``), so a
    state_dict of one loads into the other. The output is linear: apply the rate nonlinearity outside (or fuse it
    into :class:`daenr_fast.nn.PoissonLoss`).

    Args:
        in_shape: (C, H, W) of the feature map it reads.
        outdims: number of neurons N.
        bias: whether to learn a per-neuron bias.
        normalize: divide each mask by its L2 norm (+1e-6).
        init_noise: std of the normal initialisation of masks and features.
        constrain_pos: clamp masks and features to >= 0 in place at every forward.
        positive_weights: clamp features to >= 0 in place at every forward.
        positive_spatial: use |spatial| as the mask.
        mean_activity: (N,) initial bias (e.g. mean training response); zeros when None.
        spatial_and_feature_reg_weight: weight of :meth:`regularizer`.
        backend: op backend (None chooses; see :mod:`daenr_fast._dispatch`).
        **kwargs: accepted and ignored, as in neuralpredictors.
    """

    def __init__(self, in_shape, outdims: int, bias: bool = True, normalize: bool = True, init_noise: float = 1e-3,
                 constrain_pos: bool = False, positive_weights: bool = False, positive_spatial: bool = False,
                 mean_activity: Optional[torch.Tensor] = None, spatial_and_feature_reg_weight: float = 1.0,
                 backend: Optional[str] = None, **kwargs):
        super().__init__()
        if len(in_shape) != 3 or any(int(s) < 1 for s in in_shape):
            raise ValueError(f"in_shape must be (C, H, W) with positive sizes, got {tuple(in_shape)}")
        if int(outdims) < 1:
            raise ValueError(f"outdims must be a positive number of neurons, got {outdims}")
        c, h, w = (int(s) for s in in_shape)
        self.in_shape = (c, h, w)
        self.outdims = int(outdims)
        self.normalize = normalize
        self.init_noise = init_noise
        self.constrain_pos = constrain_pos
        self.positive_weights = positive_weights
        self.positive_spatial = positive_spatial
        self.mean_activity = mean_activity
        self.spatial_and_feature_reg_weight = spatial_and_feature_reg_weight
        self.backend = backend
        self.spatial = nn.Parameter(torch.empty(self.outdims, h, w))
        self._features = nn.Parameter(torch.empty(self.outdims, c))
        self.bias = nn.Parameter(torch.empty(self.outdims)) if bias else None
        self.initialize(mean_activity)

    @property
    def features(self) -> torch.Tensor:
        """Feature weights (N, C)."""
        return self._features

    @property
    def normalized_spatial(self) -> torch.Tensor:
        """Masks actually applied (N, H, W): |spatial| if ``positive_spatial``, over its L2 norm if ``normalize``."""
        weight = self.spatial.abs() if self.positive_spatial else self.spatial
        if self.normalize:
            norm = weight.pow(2).sum(dim=(1, 2), keepdim=True).sqrt() + 1e-6
            weight = weight / norm
        if self.constrain_pos:
            weight.data.clamp_min_(0)
        return weight

    @property
    def weight(self) -> torch.Tensor:
        """The full (N, C, H, W) weight the factorization stands for (for inspection; never used in forward)."""
        return self.normalized_spatial[:, None] * self.features[:, :, None, None]

    def initialize(self, mean_activity: Optional[torch.Tensor] = None) -> None:
        """Masks and features ~ N(0, init_noise^2); bias = ``mean_activity`` (or zeros)."""
        if mean_activity is None:
            mean_activity = self.mean_activity
        with torch.no_grad():
            self.spatial.normal_(0, self.init_noise)
            self._features.normal_(0, self.init_noise)
            if self.bias is not None:
                if mean_activity is None:
                    self.bias.zero_()
                else:
                    mean = torch.as_tensor(mean_activity, dtype=self.bias.dtype).reshape(-1)
                    if mean.numel() != self.outdims:
                        raise ValueError(f"mean_activity must have {self.outdims} entries (one per neuron), "
                                         f"got {mean.numel()}")
                    self.bias.copy_(mean)

    def regularizer(self, reduction: str = "sum", average: Optional[bool] = None) -> torch.Tensor:
        """``weight * sum_n ||normalized_spatial_n||_1 * ||features_n||_1``; ``"mean"`` divides by N*C*H*W.

        neuralpredictors' ``average=True/False`` is accepted as ``reduction="mean"/"sum"``.
        """
        if average is not None:
            reduction = "mean" if average else "sum"
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        l1 = (self.normalized_spatial.flatten(1).abs().sum(1) * self.features.abs().sum(1)).sum()
        if reduction == "mean":
            c, h, w = self.in_shape
            l1 = l1 / (self.outdims * c * h * w)
        return l1 * self.spatial_and_feature_reg_weight

    def forward(self, x: torch.Tensor, shift=None, **kwargs) -> torch.Tensor:
        """x (B, C, H, W) -> (B, N). ``shift`` must be None (no shifter, as in neuralpredictors)."""
        if shift is not None:
            raise ValueError("shift must be None: FactorizedReadout has no shifter (as FullFactorized2d)")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"x must have shape (B, C, H, W) = (B, {', '.join(map(str, self.in_shape))}) "
                             f"to match in_shape, got {tuple(x.shape)}")
        if self.constrain_pos or self.positive_weights:
            self._features.data.clamp_min_(0)
        return factorized_readout(x, self.normalized_spatial, self.features, self.bias, backend=self.backend)

    def extra_repr(self) -> str:
        c, h, w = self.in_shape
        return (f"{c} x {h} x {w} -> {self.outdims}, bias={self.bias is not None}, "
                f"normalize={self.normalize}")


SpatialXFeatureLinear = FactorizedReadout
FullSXF = FactorizedReadout
FullFactorized2d = FactorizedReadout
