"""Gaussian readout over the fused op :func:`daenr_fast.ops.gaussian_readout`.

    y[b,n] = sum_c features[c,n] * bilinear(x[b,c], position[b,n]) + bias[n]
    position[b,n] = clamp(mu[n] + sigma[n] z[b,n], -1, 1),  z ~ N(0, I) in training, z = 0 in eval

    x (B,C,H,W), mu (1,N,1,2), sigma (1,N,2,2) | (1,N,1,2) | (1,N,1,1), features (1,C,1,N), bias (N,) -> y (B,N)

:class:`FullGaussian2d` behaves as neuralpredictors' class of that name (the 0.3.0 release), quirks included: the
same arguments and defaults, parameter and buffer names, shapes and registration order (so state_dicts, optimizer
states and the random initialisation under one seed carry over), the same random draws for the sampled positions
(one ``normal_`` of shape (B,N,1,2), or (1,N,1,2) without ``batch_sample``), the same in-place clamping of ``_mu``
to [-1, 1] at every forward, the same regularizer, ``mu_dispersion``, ``grid`` and repr. Only the readout itself
differs: grid_sample and the feature sum are one fused, deterministic op that never holds the (B,C,N) samples.

What neuralpredictors would silently ignore or fail on obscurely is refused with an error naming the argument:
unknown keyword arguments (of the constructor and of ``forward``), ``shared_transform`` (0.3.0 swallows it and
shares nothing), ``feature_reg_weight`` together with ``gamma_readout`` (the release lets ``gamma_readout`` win,
its main branch the other), ``grid_mean_predictor`` without a ``source_grid`` of one row per neuron, both
``grid_mean_predictor`` and ``shared_grid``, ``shared_grid`` without ``match_ids``, a feature map with another
channel count. A feature map of another height or width is read with a warning, as neuralpredictors does.
``return_weighted_features`` (from neuralpredictors' main branch; the release ignores it) returns the (B,C,N)
weighted samples before the channel sum, computed by the reference formulation (it holds them by definition).
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from daenr_fast.nn import _args
from daenr_fast.ops.gaussian_readout import gaussian_readout

GAUSS_TYPES = ("isotropic", "uncorrelated", "full")
SIGMA_SHAPES = {"full": (2, 2), "uncorrelated": (1, 2), "isotropic": (1, 1)}  # per neuron
SHARED_FEATURES_KEYS = ("match_ids", "shared_features")
SHARED_GRID_KEYS = ("match_ids", "shared_grid")
GRID_MEAN_PREDICTOR_KEYS = ("hidden_features", "hidden_layers", "final_tanh")
#: passed to every readout by neuralpredictors' shared-parameter multi-readouts; what they carry reaches this
#: readout through ``shared_features``/``shared_grid``/``source_grid``
IGNORED_KWARGS = ("shared_match_ids", "source_grids")
#: passed to readouts by models built around neuralpredictors' multi-readouts; it selects the readout, not an option
IGNORED_FORWARD_KWARGS = ("data_key",)


class FullGaussian2d(nn.Module):
    """neuralpredictors' ``FullGaussian2d``: a position per neuron sampled from a learned Gaussian, read out by
    bilinear interpolation and weighted over channels; forward and backward fused (see the module docstring).

    Args:
        in_shape: (C, H, W) of the feature map (neuralpredictors names it ``[channels, width, height]`` but reads
            it as x's (C, H, W)).
        outdims: number of neurons N.
        bias: whether to learn a per-neuron bias (required, as in neuralpredictors).
        init_mu_range: ``_mu`` ~ U(-init_mu_range, init_mu_range); in (0, 1].
        init_sigma: > 0; ``sigma`` = init_sigma (isotropic, uncorrelated) or ~ U(-init_sigma, init_sigma) (full:
            the square root of the covariance).
        batch_sample: sample a position per batch entry (else one position per neuron for the whole batch).
        align_corners: grid_sample's convention for the positions.
        gauss_type: ``"isotropic"`` (one sigma), ``"uncorrelated"`` (one per axis) or ``"full"`` (2x2 matrix).
        grid_mean_predictor: None, or ``{"hidden_features": 20, "hidden_layers": 0, "final_tanh": False}`` (any
            subset): the positions' means are predicted from ``source_grid`` by an MLP ``mu_transform``.
        shared_features: None, or ``{"match_ids": ids (N,), "shared_features": None or another readout's
            shared_features}``: neurons of equal id share one feature vector, each scaled by its ``scales``.
        shared_grid: None, or ``{"match_ids": ids (N,), "shared_grid": None or another readout's shared_grid}``:
            neurons of equal id share one mean position (another readout's through an affine ``mu_transform``).
        source_grid: (N, d) array, the input of the grid mean predictor (centred and scaled to max |.| = 1).
        mean_activity: (N,) tensor, the initial bias (it becomes the bias storage); zeros (with a warning) when None.
        feature_reg_weight: weight of :meth:`regularizer` (1.0 when None).
        gamma_readout: deprecated name of ``feature_reg_weight``.
        return_weighted_features: forward returns the (B,C,N) weighted samples, before the channel sum and bias.
        backend: op backend (None chooses; see :mod:`daenr_fast._dispatch`).
        shared_match_ids, source_grids: accepted and unused (neuralpredictors' multi-readouts pass them).
        shared_transform: must be None (neuralpredictors 0.3.0 ignores it; nothing would be shared).
    """

    def __init__(self, in_shape, outdims, bias, init_mu_range=0.1, init_sigma=1, batch_sample=True,
                 align_corners=True, gauss_type="full", grid_mean_predictor=None, shared_features=None,
                 shared_grid=None, source_grid=None, mean_activity=None, feature_reg_weight=None, gamma_readout=None,
                 return_weighted_features=False, *, shared_transform=None, backend: Optional[str] = None,
                 **kwargs):
        super().__init__()
        unknown = sorted(set(kwargs) - set(IGNORED_KWARGS))
        if unknown:
            raise TypeError(f"FullGaussian2d got unexpected keyword argument(s) {', '.join(unknown)} "
                            f"(neuralpredictors ignores unknown arguments silently; daenr_fast refuses them)")
        if shared_transform is not None:
            raise NotImplementedError("shared_transform is not supported: neuralpredictors 0.3.0's FullGaussian2d "
                                      "ignores it (the transform would not be shared); pass shared_transform=None")
        self.feature_reg_weight = self.resolve_deprecated_gamma_readout(feature_reg_weight, gamma_readout)
        self.mean_activity = mean_activity
        if gauss_type not in GAUSS_TYPES:
            raise ValueError(f'gauss_type "{gauss_type}" not known; use one of {GAUSS_TYPES}')
        self.gauss_type = gauss_type
        init_mu_range = _args.real("init_mu_range", init_mu_range)
        init_sigma = _args.real("init_sigma", init_sigma)
        if init_mu_range > 1.0 or init_mu_range <= 0.0 or init_sigma <= 0.0:
            raise ValueError(f"init_mu_range must be in (0, 1] and init_sigma > 0, got init_mu_range={init_mu_range} "
                             f"and init_sigma={init_sigma}")
        self._shape = _args.shape("in_shape", in_shape, 3, "(C, H, W)")
        self.in_shape = in_shape
        self.outdims = _args.count("outdims", outdims)
        self.batch_sample = _args.flag("batch_sample", batch_sample)
        self.return_weighted_features = _args.flag("return_weighted_features", return_weighted_features)
        self.backend = backend
        self.grid_shape = (1, self.outdims, 1, 2)

        self._predicted_grid = False
        self._shared_grid = False
        self._original_grid = True
        if grid_mean_predictor is not None and shared_grid is not None:
            raise ValueError("grid_mean_predictor and shared_grid cannot both be set")
        if grid_mean_predictor is not None:
            self.init_grid_predictor(source_grid, **_dict_of("grid_mean_predictor", grid_mean_predictor,
                                                             GRID_MEAN_PREDICTOR_KEYS))
        elif source_grid is not None:
            raise ValueError("source_grid is the input of grid_mean_predictor, which is None; neuralpredictors "
                             "would ignore it silently")
        elif shared_grid is not None:
            self.initialize_shared_grid(**_dict_of("shared_grid", shared_grid, SHARED_GRID_KEYS))
        else:
            self._mu = nn.Parameter(torch.empty(*self.grid_shape))  # mean position of each neuron

        self.sigma_shape = (1, self.outdims, *SIGMA_SHAPES[gauss_type])
        self.init_sigma = init_sigma
        self.sigma = nn.Parameter(torch.empty(*self.sigma_shape))
        self.initialize_features(**_dict_of("shared_features", shared_features or {}, SHARED_FEATURES_KEYS))
        if _args.flag("bias", bias):
            self.bias = nn.Parameter(torch.empty(self.outdims))
        else:
            self.register_parameter("bias", None)
        self.init_mu_range = init_mu_range
        self.align_corners = _args.flag("align_corners", align_corners)
        self.initialize(mean_activity)

    # ------------------------------------------------------------------------------------------- positions

    def init_grid_predictor(self, source_grid, hidden_features=20, hidden_layers=0, final_tanh=False) -> None:
        """``mu_transform``: Linear(d -> 2), or Linear(d -> hidden), then ``hidden_layers`` x (ELU, Linear), the
        last to 2, then Tanh if ``final_tanh``; its input, the buffer ``source_grid`` (N, d), is ``source_grid``
        centred per column and divided by its largest absolute value."""
        if source_grid is None:
            raise ValueError(f"grid_mean_predictor needs source_grid, an (N, d) array with N = outdims = "
                             f"{self.outdims} rows")
        source = np.asarray(source_grid)
        if source.ndim != 2 or source.shape[0] != self.outdims or source.shape[1] < 1:
            raise ValueError(f"source_grid must be an (N, d) array with N = outdims = {self.outdims}, got shape "
                             f"{source.shape}")
        hidden_features = _args.count("grid_mean_predictor['hidden_features']", hidden_features)
        hidden_layers = _args.count("grid_mean_predictor['hidden_layers']", hidden_layers, minimum=0)
        self._original_grid = False
        layers = [nn.Linear(source.shape[1], hidden_features if hidden_layers > 0 else 2)]
        for i in range(hidden_layers):
            layers += [nn.ELU(), nn.Linear(hidden_features, hidden_features if i < hidden_layers - 1 else 2)]
        if _args.flag("grid_mean_predictor['final_tanh']", final_tanh):
            layers.append(nn.Tanh())
        self.mu_transform = nn.Sequential(*layers)
        source = source - source.mean(axis=0, keepdims=True)
        source = source / np.abs(source).max()
        self.register_buffer("source_grid", torch.from_numpy(source.astype(np.float32)))
        self._predicted_grid = True

    def initialize_shared_grid(self, match_ids=None, shared_grid=None) -> None:
        """Mean positions shared by neurons of equal ``match_ids``: ``_mu`` (1, unique ids, 1, 2), or another
        readout's ``shared_grid`` through ``mu_transform`` (an affine map starting as the identity);
        ``grid_sharing_index`` (N,) is each neuron's row."""
        if match_ids is None:
            raise ValueError("shared_grid needs shared_grid['match_ids'] (one id per neuron)")
        ids = _match_ids("shared_grid['match_ids']", match_ids, self.outdims)
        unique, sharing_index = np.unique(ids, return_inverse=True)
        if shared_grid is not None:
            _check_shared("shared_grid['shared_grid']", shared_grid, (1, len(unique), 1, 2))
            self._mu = shared_grid
            self._original_grid = False
            self.mu_transform = nn.Linear(2, 2)
            self.mu_transform.bias.data.fill_(0.0)
            self.mu_transform.weight.data = torch.eye(2)
        else:
            self._mu = nn.Parameter(torch.empty(1, len(unique), 1, 2))
        self.register_buffer("grid_sharing_index", torch.from_numpy(sharing_index.reshape(-1)))
        self._shared_grid = True

    @property
    def shared_grid(self) -> Tensor:
        return self._mu

    @property
    def mu(self) -> Tensor:
        """Mean positions (1,N,1,2): ``_mu``, shared rows of it, or the grid mean predictor's output."""
        if self._predicted_grid:
            return self.mu_transform(self.source_grid.squeeze()).view(*self.grid_shape)
        if self._shared_grid:
            if self._original_grid:
                return self._mu[:, self.grid_sharing_index, ...]
            return self.mu_transform(self._mu.squeeze())[self.grid_sharing_index].view(*self.grid_shape)
        return self._mu

    @property
    def grid(self) -> Tensor:
        """The positions at the mean, (1,N,1,2)."""
        return self.sample_grid(batch_size=1, sample=False)

    @property
    def mu_dispersion(self) -> Tensor:
        """Sum over the two axes of the standard deviation of ``_mu`` over neurons."""
        return self._mu.squeeze().std(0).sum()

    def sample_grid(self, batch_size: int, sample: Optional[bool] = None) -> Tensor:
        """Positions (batch_size,N,1,2): ``clamp(mu + sigma z, -1, 1)`` with z ~ N(0, I) when sampling (``sample``
        True, or None in training mode), z = 0 otherwise. ``_mu`` itself is first clamped to [-1, 1] in place."""
        if not (self._predicted_grid or self._shared_grid):
            with torch.no_grad():
                self._mu.clamp_(min=-1, max=1)  # the other kinds of mu are computed: clamping them changes nothing
        mu = self.mu
        shape = (batch_size,) + self.grid_shape[1:]
        sample = self.training if sample is None else sample
        norm = mu.new_empty(shape).normal_() if sample else mu.new_zeros(shape)
        if self.gauss_type != "full":
            return torch.clamp(norm * self.sigma + mu, min=-1, max=1)
        return torch.clamp(torch.einsum("ancd,bnid->bnic", self.sigma, norm) + mu, min=-1, max=1)

    # ------------------------------------------------------------------------------------------- features

    def initialize_features(self, match_ids=None, shared_features: Optional[Tensor] = None) -> None:
        """Feature weights ``_features`` (1,C,1,N), or (1,C,1,unique ids) shared by neurons of equal ``match_ids``
        and scaled per neuron by ``scales`` (1,1,1,N); with ``shared_features`` another readout's
        ``shared_features`` is used (not copied) and :meth:`feature_l1` of this readout is 0."""
        c = self._shape[0]
        self._original_features = True
        if match_ids is None:
            if shared_features is not None:
                raise ValueError("shared_features['shared_features'] needs shared_features['match_ids'] (one id "
                                 "per neuron); neuralpredictors would ignore the given features silently")
            self._features = nn.Parameter(torch.empty(1, c, 1, self.outdims))
            self._shared_features = False
            return
        ids = _match_ids("shared_features['match_ids']", match_ids, self.outdims)
        unique, sharing_index = np.unique(ids, return_inverse=True)
        if shared_features is not None:
            _check_shared("shared_features['shared_features']", shared_features, (1, c, 1, len(unique)))
            self._features = shared_features
            self._original_features = False
        else:
            self._features = nn.Parameter(torch.empty(1, c, 1, len(unique)))
        self.scales = nn.Parameter(torch.empty(1, 1, 1, self.outdims))
        self.register_buffer("feature_sharing_index", torch.from_numpy(sharing_index.reshape(-1)))
        self._shared_features = True

    @property
    def shared_features(self) -> Tensor:
        return self._features

    @property
    def features(self) -> Tensor:
        """Feature weights per neuron (1,C,1,N): ``_features``, or ``scales * _features[..., sharing index]``."""
        if self._shared_features:
            return self.scales * self._features[..., self.feature_sharing_index]
        return self._features

    # ------------------------------------------------------------------------------------------- initialisation

    def initialize(self, mean_activity: Optional[Tensor] = None) -> None:
        """``_mu`` ~ U(+-init_mu_range) (also a shared one, unless predicted), sigma from ``init_sigma``, features
        = 1/C, scales = 1, bias from ``mean_activity`` (the constructor's when None)."""
        if mean_activity is None:
            mean_activity = self.mean_activity
        if not self._predicted_grid or self._original_grid:
            self._mu.data.uniform_(-self.init_mu_range, self.init_mu_range)
        if self.gauss_type != "full":
            self.sigma.data.fill_(self.init_sigma)
        else:
            self.sigma.data.uniform_(-self.init_sigma, self.init_sigma)
        self._features.data.fill_(1 / self._shape[0])
        if self._shared_features:
            self.scales.data.fill_(1.0)
        if self.bias is not None:
            self.initialize_bias(mean_activity=mean_activity)

    def initialize_bias(self, mean_activity: Optional[Tensor] = None) -> None:
        """bias = ``mean_activity`` (which becomes the bias storage), or zeros with a warning when None."""
        if mean_activity is None:
            warnings.warn("Readout is NOT initialized with mean activity but with 0!")
            self.bias.data.fill_(0)
            return
        if not isinstance(mean_activity, Tensor):
            raise TypeError(f"mean_activity must be a torch.Tensor with {self.outdims} entries (one per neuron), "
                            f"got {type(mean_activity).__name__}")
        if mean_activity.numel() != self.outdims:
            raise ValueError(f"mean_activity must have {self.outdims} entries (one per neuron), "
                             f"got {mean_activity.numel()}")
        self.bias.data = mean_activity.reshape(-1)

    # ------------------------------------------------------------------------------------------- regularizer

    def resolve_deprecated_gamma_readout(self, feature_reg_weight, gamma_readout) -> float:
        """The regularizer weight from ``feature_reg_weight`` or the deprecated ``gamma_readout`` (1.0 if neither)."""
        if gamma_readout is not None:
            warnings.warn("gamma_readout is deprecated, use feature_reg_weight")
            if feature_reg_weight is not None:
                raise ValueError(f"give feature_reg_weight ({feature_reg_weight!r}) or gamma_readout "
                                 f"({gamma_readout!r}), not both: neuralpredictors 0.3.0 uses gamma_readout, its "
                                 f"main branch feature_reg_weight")
            return _args.real("gamma_readout", gamma_readout)
        return 1.0 if feature_reg_weight is None else _args.real("feature_reg_weight", feature_reg_weight)

    def resolve_reduction_method(self, reduction="mean", average: Optional[bool] = None):
        """The deprecated ``average=True/False`` as ``reduction="mean"/"sum"`` (with a warning)."""
        if average is not None:
            warnings.warn("average= is deprecated, use reduction='mean' or reduction='sum'")
            reduction = "mean" if average else "sum"
        return reduction

    def apply_reduction(self, x: Tensor, reduction="mean", average: Optional[bool] = None):
        """``x.mean()``, ``x.sum()`` or ``x`` for ``reduction`` ``"mean"``, ``"sum"`` or None."""
        reduction = self.resolve_reduction_method(reduction=reduction, average=average)
        if reduction == "mean":
            return x.mean()
        if reduction == "sum":
            return x.sum()
        if reduction is None:
            return x
        raise ValueError(f"reduction must be 'mean', 'sum' or None, got {reduction!r}")

    def feature_l1(self, reduction="sum", average: Optional[bool] = None):
        """L1 norm of :attr:`features` (reduced), or 0 when the features belong to another readout."""
        if self._original_features:
            return self.apply_reduction(self.features.abs(), reduction=reduction, average=average)
        return 0

    def regularizer(self, reduction="sum", average: Optional[bool] = None):
        """``feature_reg_weight * feature_l1(reduction)``."""
        return self.feature_l1(reduction=reduction, average=average) * self.feature_reg_weight

    # ------------------------------------------------------------------------------------------- forward

    def forward(self, x: Tensor, sample: Optional[bool] = None, shift: Optional[Tensor] = None, out_idx=None,
                **kwargs) -> Tensor:
        """x (B,C,H,W) -> (B,N) (or (B,len(out_idx))).

        Args:
            sample: draw the positions from the Gaussians (True), use their means (False), or decide by the
                training mode (None).
            shift: (B,2) added to every position after sampling (eye movements); may move them off the map.
            out_idx: the neurons to predict: indices, or a boolean NumPy mask.
            data_key: accepted and unused (it selects a readout of a multi-readout).
        """
        unknown = sorted(set(kwargs) - set(IGNORED_FORWARD_KWARGS))
        if unknown:
            raise TypeError(f"FullGaussian2d.forward got unexpected keyword argument(s) {', '.join(unknown)}")
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, C, H, W) = (B, {', '.join(map(str, self._shape))}), got {got}")
        b, c, h, w = x.shape
        if c != self._shape[0]:
            raise ValueError(f"x has {c} channels but the readout reads {self._shape[0]} (in_shape={self.in_shape})")
        if (h, w) != self._shape[1:]:
            warnings.warn("the specified feature map dimension is not the readout's expected input dimension")
        if x.dtype != self.sigma.dtype or x.device != self.sigma.device:
            raise TypeError(f"x is {x.dtype} on {x.device} but the readout's parameters are {self.sigma.dtype} on "
                            f"{self.sigma.device}; convert one of them (x.to(...) or readout.to(...))")
        features = self.features.reshape(c, self.outdims)
        bias = self.bias
        grid = self.sample_grid(batch_size=b if self.batch_sample else 1, sample=sample)  # (B or 1, N, 1, 2)
        if out_idx is not None:
            if isinstance(out_idx, np.ndarray) and out_idx.dtype == bool:
                out_idx = np.where(out_idx)[0]
            features = features[:, out_idx]
            grid = grid[:, out_idx]
            if bias is not None:
                bias = bias[out_idx]
        if shift is not None:
            grid = grid + shift[:, None, None, :]
        positions = grid[:, :, 0, :]
        if positions.shape[0] != b:  # one position per neuron for the whole batch
            positions = positions[0]
        if self.return_weighted_features:
            per_batch = positions.expand(b, *positions.shape) if positions.dim() == 2 else positions
            sampled = F.grid_sample(x, per_batch[:, :, None, :], align_corners=self.align_corners)
            return sampled[..., 0] * features
        if bias is not None and bias.dtype != x.dtype:  # a mean_activity of another dtype became the bias
            y = gaussian_readout(x, positions, features, align_corners=self.align_corners, backend=self.backend)
            return y + bias
        return gaussian_readout(x, positions, features, bias, align_corners=self.align_corners, backend=self.backend)

    def __repr__(self) -> str:
        c, w, h = self.in_shape
        text = f"{self.gauss_type} {type(self).__name__} ({c} x {w} x {h} -> {self.outdims})"
        if self.bias is not None:
            text += " with bias"
        if self._shared_features:
            text += f", with {'original' if self._original_features else 'shared'} features"
        if self._predicted_grid:
            text += ", with predicted grid"
        if self._shared_grid:
            text += f", with {'original' if self._original_grid else 'shared'} grid"
        for child in self.children():
            text += "  -> " + repr(child) + "\n"
        return text


def _dict_of(name: str, value, keys: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be None or a dict with keys from {keys}, got {type(value).__name__}")
    extra = sorted(set(value) - set(keys))
    if extra:
        raise TypeError(f"{name} has unknown key(s) {', '.join(map(repr, extra))}; valid: {keys}")
    return value


def _match_ids(name: str, match_ids, outdims: int) -> np.ndarray:
    ids = np.asarray(match_ids)
    if ids.ndim != 1 or len(ids) != outdims:
        raise ValueError(f"{name} must hold one id per neuron (outdims={outdims}), got shape {ids.shape}")
    return ids


def _check_shared(name: str, value, shape: tuple[int, ...]) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a tensor (another readout's parameter), got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
