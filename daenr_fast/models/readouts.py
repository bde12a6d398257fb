"""Readout heads mapping a feature map h_i (B,C,H,W) to neuron responses (B,n).

All heads return the *pre-activation* ``z``; the output nonlinearity (default ELU+1, so rates are
``r = elu(z) + 1 > 0``) is fused into the Poisson loss and applied by :func:`activate` for predictions.

The paper's three (:data:`READOUTS`), by default as the cited methods define them:

* FR, factorized (Klindt et al. 2017): ``z[b,n] = sum_c w[n,c] sum_xy m[n,x,y] h[b,c,x,y] + b[n]`` with a learned
  spatial mask m (n,H,W) (L2-normalised) and feature weights w (n,C) — :class:`daenr_fast.nn.FactorizedReadout`;
  penalty ``readout_l1 * sum_n |m_n|_1 |w_n|_1`` (the sparsity constraint the paper stresses).
* FC, fully connected (McIntosh et al. 2016, as Klindt et al. 2017 ran it): ``z = W dropout(vec(h)) + b`` with
  W (n, C*H*W), dropout ``fc_dropout`` on the flattened features in training, penalty
  ``fc_l2 * 1/2 sum W^2`` — :class:`FullyConnectedReadout`.
* FM, fixed mask (Klindt et al. 2017): the FR formula with m fixed before training from the training data
  (``fm_mask="envelope-peak"``: one-hot on the cell of each neuron's spike-triggered-envelope peak;
  ``"ridge-gaussian"``: a Gaussian of std ``fm_sigma`` at a ridge-fit RF centre); penalty
  ``readout_l1 * sum |w|`` — :class:`FixedMaskReadout`.

Extension (:data:`EXTRA_READOUTS`, not in the paper): GR, the Gaussian readout of the field's current models —
:class:`daenr_fast.models.gaussian_head.GaussianReadout`; penalty ``readout_l1 * sum |f|``.

Every head has ``regularizer() -> scalar`` (its weighted penalty; the trainer adds ``readout_reg`` times it to the
response term) and ``masks() -> (n,H,W)``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daenr_fast import nn as dnn
from daenr_fast.models.gaussian_head import GaussianReadout
from daenr_fast.nn import FixedMaskReadout, FullyConnectedReadout  # noqa: F401  (re-exported)
from daenr_fast.nn.fixed_mask_readout import METHODS as FM_MASKS

#: the paper's readouts
READOUTS = ("fr", "fc", "fm")
#: readouts beyond the paper (model names ``cae-gr``, ..., ``cnn-gr``)
EXTRA_READOUTS = ("gr",)
ALL_READOUTS = READOUTS + EXTRA_READOUTS
ACTIVATIONS = ("identity", "elu1", "softplus", "exp")


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown response activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return name


def activate(z: Tensor, activation: str = "elu1") -> Tensor:
    """Output nonlinearity: identity, ``elu(z)+1``, ``softplus(z)`` or ``exp(z)``; z (B,n) -> rates (B,n)."""
    check_activation(activation)
    if activation == "elu1":
        return F.elu(z) + 1.0
    if activation == "softplus":
        return F.softplus(z)
    if activation == "exp":
        return z.exp()
    return z


def inverse_activation(rate: Tensor, activation: str = "elu1") -> Tensor:
    """z with ``activate(z) == rate`` (rates clamped to >= 1e-3 for the positive activations)."""
    check_activation(activation)
    if activation == "identity":
        return rate
    rate = rate.clamp_min(1e-3)
    if activation == "elu1":
        return torch.where(rate >= 1.0, rate - 1.0, rate.log())
    if activation == "softplus":
        return rate + torch.log(-torch.expm1(-rate))
    return rate.log()


def build_readout(kind: str, in_shape: Tuple[int, int, int], n_neurons: int, options: dict,
                  image_size: int = 32) -> nn.Module:
    """Build an FR / FC / FM / GR head for a feature map of shape ``in_shape`` (C,H,W) and ``n_neurons`` outputs.

    ``options`` holds (at least) the readout entries of :data:`daenr_fast.models.registry.MODEL_OPTIONS`
    (``init_noise``, ``readout_l1``, ``fc_dropout``, ``fc_l2``, ``fm_mask``, ``fm_sigma``, ``gr_init``; their
    defaults are written there only); see the module docstring for what each head does with them.
    """
    if kind == "fr":
        return dnn.FactorizedReadout(in_shape=tuple(in_shape), outdims=n_neurons, bias=True,
                                     init_noise=options["init_noise"],
                                     spatial_and_feature_reg_weight=options["readout_l1"])
    if kind == "fc":
        return FullyConnectedReadout(in_shape, n_neurons, init_noise=options["init_noise"],
                                     dropout=options["fc_dropout"], l1_weight=0.0, l2_weight=options["fc_l2"])
    if kind == "fm":
        if options["fm_mask"] not in FM_MASKS:
            raise ValueError(f"unknown fixed mask {options['fm_mask']!r} (fm_mask); valid: {', '.join(FM_MASKS)}")
        return FixedMaskReadout(in_shape, n_neurons, sigma=options["fm_sigma"], image_size=image_size,
                                init_noise=options["init_noise"], method=options["fm_mask"],
                                l1_weight=options["readout_l1"])
    if kind == "gr":
        return GaussianReadout(in_shape, n_neurons, init=options["gr_init"], l1_weight=options["readout_l1"],
                               image_size=image_size)
    raise ValueError(f"unknown readout {kind!r}; valid: {', '.join(ALL_READOUTS)}")


def readout_masks(head: nn.Module) -> Optional[Tensor]:
    """Spatial masks (n,H,W) of any head: FR ``normalized_spatial``, FM its fixed mask, FC weight norms, GR the
    bilinear weights at the mean positions."""
    if hasattr(head, "masks"):
        return head.masks()
    if hasattr(head, "normalized_spatial"):
        return head.normalized_spatial.detach()
    return None
