"""Factorized (mask x features) readouts over the fused op :func:`daenr_fast.ops.factorized_readout`.

    y[b,n] = sum_c features[n,c] * sum_{h,w} normalized_spatial[n,h,w] * x[b,c,h,w] + bias[n]

    x (B,C,H,W), spatial (N,H,W), features (N,C), bias (N,) -> y (B,N)

* :class:`FullFactorized2d` (and its subclasses :class:`SpatialXFeatureLinear`, :class:`FullSXF`) behave as
  neuralpredictors' classes of those names, quirks included: same arguments and defaults, parameter and buffer names
  and registration order (so state_dicts, optimizer states and the random initialisation under one seed carry
  over), the same ``regularizer``/``l1`` values, the same in-place clamping.
* :class:`FactorizedReadout` is the native class (the paper's FR head). It differs from ``FullFactorized2d`` only
  through three named options, each fixing one quirk of neuralpredictors (defaults = fixed):

  ``l1_pairs="same"``
      the L1 penalty pairs each neuron's mask with its own features, ``sum_n |m_n|_1 |w_n|_1``.
      neuralpredictors (``"all"``) broadcasts an (N,1) by an (N,) vector and so sums over all neuron pairs,
      ``(sum_n |m_n|_1) (sum_m |w_m|_1)``.
  ``positive_features_in_forward=True``
      ``positive_weights`` and ``constrain_pos`` clamp the stored feature parameters (``_features``, and
      ``scales`` with shared features) to >= 0 before every forward. neuralpredictors (False) applies
      ``positive_weights`` only when :attr:`weight` is read (its forward ignores it) and, with shared features,
      clamps a temporary copy (so neither option constrains anything).
  ``copy_mean_activity=True``
      the bias is initialised with a copy of ``mean_activity`` (cast to the bias dtype). neuralpredictors (False)
      makes the given tensor itself the bias storage: training then writes into the caller's tensor, and two
      readouts given the same tensor share one bias.

Where the neuralpredictors 0.3.0 release (PyPI) and its main branch differ, these classes follow main in what it
added (``positive_spatial``, which the release swallows in ``**kwargs``; ``spatial_and_feature_reg_weight=None``)
and the release where main has a bug (:attr:`weight` and the repr, which main lays out as (W, H) for non-square
maps). Calls whose meaning differs between the two, and arguments neuralpredictors would silently ignore, are
refused with an error naming the argument: ``spatial_and_feature_reg_weight`` together with ``gamma_readout`` (the
release lets ``gamma_readout`` win, main the other), unknown keyword arguments, an eighth positional argument
(``shared_features`` in the release, ``positive_spatial`` on main), ``shared_features={"shared_features": ...}``
without ``match_ids``, reductions other than ``"sum"``/``"mean"``.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from daenr_fast.nn import _args
from daenr_fast.ops.factorized_readout import factorized_readout

INIT_NOISE = 1e-3
L1_PAIRS = ("all", "same")
SHARED_FEATURES_KEYS = ("match_ids", "shared_features")
# passed to every readout by neuralpredictors' MultiReadoutSharedParametersBase; the ids reach this readout
# through ``shared_features``, so the argument itself carries nothing for it
IGNORED_KWARGS = ("shared_match_ids",)


class _Factorized2d(nn.Module):
    """The implementation behind :class:`FullFactorized2d` and :class:`FactorizedReadout` (see the module doc)."""

    def __init__(self, in_shape, outdims, bias, normalize, init_noise, constrain_pos, positive_weights,
                 positive_spatial, shared_features, mean_activity, spatial_and_feature_reg_weight, gamma_readout,
                 backend, kwargs, *, l1_pairs, positive_features_in_forward, copy_mean_activity, spatial_first):
        super().__init__()
        unknown = sorted(set(kwargs) - set(IGNORED_KWARGS))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) {', '.join(unknown)} "
                            f"(neuralpredictors ignores unknown arguments silently; daenr_fast refuses them)")
        if l1_pairs not in L1_PAIRS:
            raise ValueError(f"l1_pairs must be one of {L1_PAIRS}, got {l1_pairs!r}")
        self._l1_pairs = l1_pairs
        self._positive_features_in_forward = _args.flag("positive_features_in_forward", positive_features_in_forward)
        self._copy_mean_activity = _args.flag("copy_mean_activity", copy_mean_activity)
        self._shape = _args.shape("in_shape", in_shape, 3, "(C, H, W)")
        self.in_shape = in_shape
        self.outdims = _args.count("outdims", outdims)
        self.positive_weights = _args.flag("positive_weights", positive_weights)
        self.constrain_pos = _args.flag("constrain_pos", constrain_pos)
        self.positive_spatial = _args.flag("positive_spatial", positive_spatial)
        if self.positive_spatial and self.constrain_pos:
            warnings.warn("positive_spatial and constrain_pos are both True: only constrain_pos takes effect "
                          "(the mask is clamped, not made absolute)")
        self.init_noise = _args.real("init_noise", init_noise, minimum=0.0)
        self.normalize = _args.flag("normalize", normalize)
        self.mean_activity = mean_activity
        self.spatial_and_feature_reg_weight = self.resolve_deprecated_gamma_readout(
            spatial_and_feature_reg_weight, gamma_readout)
        self.backend = backend
        if shared_features is None:
            shared_features = {}
        if not isinstance(shared_features, dict):
            raise TypeError(f"shared_features must be None or a dict with keys {SHARED_FEATURES_KEYS}, "
                            f"got {type(shared_features).__name__}")
        extra = sorted(set(shared_features) - set(SHARED_FEATURES_KEYS))
        if extra:
            raise TypeError(f"shared_features has unknown key(s) {', '.join(map(repr, extra))}; "
                            f"valid: {SHARED_FEATURES_KEYS}")
        # parameter order (the order of parameters(), which optimizer states follow): neuralpredictors registers
        # _features (scales, feature_sharing_index), spatial, bias; FactorizedReadout keeps its own earlier order
        # spatial, _features, bias, so its saved optimizer states stay loadable. The values do not depend on it.
        c, h, w = self._shape
        if spatial_first:
            self.spatial = nn.Parameter(torch.empty(self.outdims, h, w))
        self._original_features = True
        self.initialize_features(**shared_features)
        if not spatial_first:
            self.spatial = nn.Parameter(torch.empty(self.outdims, h, w))
        if _args.flag("bias", bias):
            self.bias = nn.Parameter(torch.empty(self.outdims))
        else:
            self.register_parameter("bias", None)
        self.initialize(mean_activity)

    # ------------------------------------------------------------------------------------------- parameters

    def initialize_features(self, match_ids=None, shared_features: Optional[Tensor] = None) -> None:
        """Create the feature weights: (N, C) per neuron, or shared ones ``(len(unique(match_ids)), C)``.

        With ``match_ids`` (one id per neuron) neurons with equal ids share a feature vector, each scaled by its
        own ``scales[n]`` (N, 1); ``feature_sharing_index`` (N,) is the buffer of each neuron's row. With
        ``shared_features`` as well (another readout's :attr:`shared_features`) that tensor is used, not copied.
        """
        c = self._shape[0]
        if match_ids is None:
            if shared_features is not None:
                raise ValueError("shared_features['shared_features'] needs shared_features['match_ids'] (one id per "
                                 "neuron); neuralpredictors would ignore the given features silently")
            self._features = nn.Parameter(torch.empty(self.outdims, c))
            self._shared_features = False
            return
        ids = np.asarray(match_ids)
        if ids.ndim != 1 or len(ids) != self.outdims:
            raise ValueError(f"shared_features['match_ids'] must hold one id per neuron (outdims={self.outdims}), "
                             f"got shape {ids.shape}")
        unique, sharing_index = np.unique(ids, return_inverse=True)
        if shared_features is not None:
            if not isinstance(shared_features, Tensor):
                raise TypeError(f"shared_features['shared_features'] must be a tensor (another readout's "
                                f"shared_features), got {type(shared_features).__name__}")
            if tuple(shared_features.shape) != (len(unique), c):
                raise ValueError(f"shared_features['shared_features'] must have shape (unique match ids, C) = "
                                 f"({len(unique)}, {c}), got {tuple(shared_features.shape)}")
            self._features = shared_features
            self._original_features = False
        else:
            self._features = nn.Parameter(torch.empty(len(unique), c))
        self.scales = nn.Parameter(torch.empty(self.outdims, 1))
        self.register_buffer("feature_sharing_index", torch.from_numpy(sharing_index.reshape(-1).astype(np.int64)))
        self._shared_features = True

    def initialize(self, mean_activity: Optional[Tensor] = None) -> None:
        """Masks and features ~ N(0, init_noise^2) (in that order), scales = 1, bias from ``mean_activity``.

        Without ``mean_activity`` the one given to the constructor is used (zeros when that was None too).
        """
        if mean_activity is None:
            mean_activity = self.mean_activity
        self.spatial.data.normal_(0, self.init_noise)
        self._features.data.normal_(0, self.init_noise)
        if self._shared_features:
            self.scales.data.fill_(1.0)
        if self.bias is not None:
            self.initialize_bias(mean_activity=mean_activity)

    def initialize_bias(self, mean_activity: Optional[Tensor] = None) -> None:
        """bias = ``mean_activity`` (N entries), or zeros when None (see ``copy_mean_activity``)."""
        if mean_activity is None:
            self.bias.data.fill_(0)
            return
        if self._copy_mean_activity:
            mean = torch.as_tensor(mean_activity, dtype=self.bias.dtype, device=self.bias.device)
        elif isinstance(mean_activity, Tensor):
            mean = mean_activity
        else:
            raise TypeError(f"mean_activity must be a torch.Tensor with {self.outdims} entries (one per neuron), "
                            f"got {type(mean_activity).__name__}")
        if mean.numel() != self.outdims:
            raise ValueError(f"mean_activity must have {self.outdims} entries (one per neuron), got {mean.numel()}")
        if self._copy_mean_activity:
            self.bias.data.copy_(mean.reshape(-1))
        else:
            self.bias.data = mean.reshape(-1)

    @property
    def shared_features(self) -> Tensor:
        """The stored feature weights ``_features``: (N, C), or (unique match ids, C) when shared."""
        return self._features

    @property
    def features(self) -> Tensor:
        """Feature weights per neuron (N, C): ``_features``, or ``scales * _features[feature_sharing_index]``."""
        if self._shared_features:
            return self.scales * self._features[self.feature_sharing_index, ...]
        return self._features

    @property
    def normalized_spatial(self) -> Tensor:
        """The masks applied (N, H, W).

        ``spatial / (||spatial_n||_2 + 1e-6)`` if ``normalize``; then with ``constrain_pos`` the values are
        clamped to >= 0 in place (through ``.data``: the gradient is that of the unclamped expression, and without
        ``normalize`` the parameter itself is clamped), else with ``positive_spatial`` the absolute value is taken.
        """
        weight = self.spatial
        if self.normalize:
            norm = weight.pow(2).sum(dim=1, keepdim=True).sum(dim=2, keepdim=True).sqrt().expand_as(weight) + 1e-6
            weight = weight / norm
        if self.constrain_pos:
            weight.data.clamp_min_(0)
        elif self.positive_spatial:
            weight = weight.abs()
        return weight

    @property
    def weight(self) -> Tensor:
        """The full (N, C, H, W) weight the factorization stands for (for inspection; never used in forward).

        With ``positive_weights`` the features are clamped to >= 0 in place first.
        """
        if self.positive_weights:
            self._clamp_features()
        return self.normalized_spatial[:, None] * self.features[:, :, None, None]

    def _clamp_features(self) -> None:
        if self._positive_features_in_forward:
            self._features.data.clamp_min_(0)
            if self._shared_features:
                self.scales.data.clamp_min_(0)
        else:
            self.features.data.clamp_min_(0)  # neuralpredictors: with shared features this is a temporary

    # ------------------------------------------------------------------------------------------- regularizer

    def resolve_reduction_method(self, reduction: Optional[str] = "mean", average: Optional[bool] = None):
        """The deprecated ``average=True/False`` as ``reduction="mean"/"sum"`` (with a warning)."""
        if average is not None:
            warnings.warn("average= is deprecated, use reduction='mean' or reduction='sum'")
            reduction = "mean" if average else "sum"
        return reduction

    def resolve_deprecated_gamma_readout(self, feature_reg_weight: Optional[float], gamma_readout: Optional[float],
                                         default: float = 1.0) -> float:
        """The regularizer weight from ``spatial_and_feature_reg_weight`` or the deprecated ``gamma_readout``."""
        if gamma_readout is not None:
            warnings.warn("gamma_readout is deprecated, use spatial_and_feature_reg_weight")
            if feature_reg_weight is not None:
                raise ValueError(
                    f"give spatial_and_feature_reg_weight ({feature_reg_weight!r}) or gamma_readout "
                    f"({gamma_readout!r}), not both: neuralpredictors 0.3.0 uses gamma_readout, its main branch "
                    f"spatial_and_feature_reg_weight")
            return _args.real("gamma_readout", gamma_readout, minimum=0.0)
        if feature_reg_weight is None:
            return default
        return _args.real("spatial_and_feature_reg_weight", feature_reg_weight, minimum=0.0)

    def apply_reduction(self, x: Tensor, reduction: Optional[str] = "mean", average: Optional[bool] = None):
        """``x.mean()``, ``x.sum()`` or ``x`` for ``reduction`` ``"mean"``, ``"sum"`` or None."""
        reduction = self.resolve_reduction_method(reduction=reduction, average=average)
        if reduction == "mean":
            return x.mean()
        if reduction == "sum":
            return x.sum()
        if reduction is None:
            return x
        raise ValueError(f"reduction must be 'mean', 'sum' or None, got {reduction!r}")

    def l1(self, reduction: str = "sum", average: Optional[bool] = None) -> Tensor:
        """L1 penalty of masks times features (see ``l1_pairs``); ``"mean"`` divides by N*C*H*W.

        ``"all"``: ``(sum_n ||normalized_spatial_n||_1) * (sum_m ||features_m||_1)`` (neuralpredictors);
        ``"same"``: ``sum_n ||normalized_spatial_n||_1 * ||features_n||_1``.
        """
        reduction = self.resolve_reduction_method(reduction=reduction, average=average)
        if reduction is None:
            raise ValueError("reduction=None is not supported by this regularizer; use 'sum' or 'mean'")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        spatial_l1 = self.normalized_spatial.reshape(self.outdims, -1).abs().sum(dim=1)
        feature_l1 = self.features.reshape(self.outdims, -1).abs().sum(dim=1)
        if self._l1_pairs == "all":
            ret = spatial_l1.sum() * feature_l1.sum()
        else:
            ret = (spatial_l1 * feature_l1).sum()
        if reduction == "mean":
            c, h, w = self._shape
            ret = ret / (self.outdims * c * h * w)
        return ret

    def regularizer(self, reduction: str = "sum", average: Optional[bool] = None) -> Tensor:
        """``spatial_and_feature_reg_weight * l1(reduction)``."""
        return self.l1(reduction=reduction, average=average) * self.spatial_and_feature_reg_weight

    # ------------------------------------------------------------------------------------------- forward

    def forward(self, x: Tensor, shift=None, **kwargs) -> Tensor:
        """x (B, C, H, W) -> (B, N). Other keyword arguments (data_key, ...) are ignored; ``shift`` must be None."""
        if shift is not None:
            raise NotImplementedError(f"shift is not supported: {type(self).__name__} has no shifter "
                                      f"(as in neuralpredictors); pass shift=None")
        if self.constrain_pos or (self.positive_weights and self._positive_features_in_forward):
            self._clamp_features()
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self._shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, C, H, W) = (B, {', '.join(map(str, self._shape))}) "
                             f"to match in_shape, got {got}")
        return factorized_readout(x, self.normalized_spatial, self.features, self.bias, backend=self.backend)

    def __repr__(self) -> str:
        c, h, w = self._shape
        text = f"{type(self).__name__} ({c} x {h} x {w} -> {self.outdims})"
        if self.bias is not None:
            text += " with bias"
        if self._shared_features:
            text += f", with {'original' if self._original_features else 'shared'} features"
        return text + (", normalized" if self.normalize else ", unnormalized")


class FullFactorized2d(_Factorized2d):
    """neuralpredictors' ``FullFactorized2d``, forward and backward fused.

    Args:
        in_shape: (C, H, W) of the feature map it reads.
        outdims: number of neurons N.
        bias: whether to learn a per-neuron bias (required, as in neuralpredictors).
        normalize: divide each mask by its L2 norm (+1e-6).
        init_noise: std of the normal initialisation of masks and features.
        constrain_pos: clamp the masks (see :attr:`normalized_spatial`) and the features to >= 0 in place at
            every forward.
        positive_weights: clamp the features to >= 0 in place whenever :attr:`weight` is read (not in forward).
        positive_spatial: use the absolute value of the (normalized) mask (ignored under ``constrain_pos``).
        shared_features: None, or ``{"match_ids": ids (N,), "shared_features": None or another readout's
            shared_features}`` to share feature vectors between neurons of equal id (see
            :meth:`initialize_features`).
        mean_activity: (N,) tensor, the initial bias (it becomes the bias storage); zeros when None.
        spatial_and_feature_reg_weight: weight of :meth:`regularizer` (1.0 when None).
        gamma_readout: deprecated name of ``spatial_and_feature_reg_weight``.
        backend: op backend (None chooses; see :mod:`daenr_fast._dispatch`).
        shared_match_ids: accepted and unused (neuralpredictors' shared-parameter multi-readout passes it).
    """

    def __init__(self, in_shape, outdims, bias, normalize=True, init_noise=INIT_NOISE, constrain_pos=False,
                 positive_weights=False, *, positive_spatial=False, shared_features=None, mean_activity=None,
                 spatial_and_feature_reg_weight=None, gamma_readout=None, backend: Optional[str] = None, **kwargs):
        super().__init__(in_shape, outdims, bias, normalize, init_noise, constrain_pos, positive_weights,
                         positive_spatial, shared_features, mean_activity, spatial_and_feature_reg_weight,
                         gamma_readout, backend, kwargs, l1_pairs="all", positive_features_in_forward=False,
                         copy_mean_activity=False, spatial_first=False)


class SpatialXFeatureLinear(FullFactorized2d):
    """neuralpredictors' ``SpatialXFeatureLinear``: a subclass of :class:`FullFactorized2d` adding nothing."""


class FullSXF(FullFactorized2d):
    """neuralpredictors' ``FullSXF``: a subclass of :class:`FullFactorized2d` adding nothing."""


class FactorizedReadout(_Factorized2d):
    """The native factorized readout: :class:`FullFactorized2d`'s arguments (``bias`` defaults to True) and three
    options that fix neuralpredictors' quirks (module docstring): ``l1_pairs`` (``"same"``; ``"all"`` as
    neuralpredictors), ``positive_features_in_forward`` (True; False as neuralpredictors) and
    ``copy_mean_activity`` (True; False as neuralpredictors). With all three set to the neuralpredictors values it
    computes exactly what :class:`FullFactorized2d` does (its parameters are registered spatial first, so
    ``parameters()`` lists ``spatial`` before ``_features``; state_dicts load into each other by name). The output
    is linear: apply the rate nonlinearity outside (or fuse it into :class:`daenr_fast.nn.PoissonLoss`).
    """

    def __init__(self, in_shape, outdims, bias=True, normalize=True, init_noise=INIT_NOISE, constrain_pos=False,
                 positive_weights=False, *, positive_spatial=False, shared_features=None, mean_activity=None,
                 spatial_and_feature_reg_weight=None, gamma_readout=None, l1_pairs: str = "same",
                 positive_features_in_forward: bool = True, copy_mean_activity: bool = True,
                 backend: Optional[str] = None, **kwargs):
        super().__init__(in_shape, outdims, bias, normalize, init_noise, constrain_pos, positive_weights,
                         positive_spatial, shared_features, mean_activity, spatial_and_feature_reg_weight,
                         gamma_readout, backend, kwargs, l1_pairs=l1_pairs,
                         positive_features_in_forward=positive_features_in_forward,
                         copy_mean_activity=copy_mean_activity, spatial_first=True)
