"""The DAE-NR training loss, term by term (the one definition; the trainer and the grid trainer both call it).

For a batch of B images x (..., B,1,32,32), responses s (..., B,n) and a :class:`~daenr_fast.models.ModelOutput`
(leading dimensions ``...``, e.g. a stack of G models, are kept: every term is then one value per model)::

    reconstruction = 1/B sum_b red_P (x_b - x_hat_b)^2               (paper Eq. 4; P = 32*32 pixels)
    kl, vq         = the autoencoder's extra terms (per image)        (VAE ELBO / VQ-VAE losses)
    response       = 1/B sum_b red_n (r_bn - s_bn log(r_bn + 1e-8)),  r = act(z)   (paper Eq. 6; fused op)
                   or 1/B sum_b red_n (act(z)_bn - s_bn)^2           (response_loss="mse")
    readout_reg    = the readout's L1 sparsity penalty

    total = alpha * (reconstruction + kl_weight * kl + vq) + beta * (response + readout_reg_weight * readout_reg)

``red_P`` / ``red_n`` is a sum or a mean over the image's pixels / neurons (``recon_reduction`` /
``response_reduction``, see :mod:`daenr_fast.train.config`). Terms a model does not have are absent from the
returned dict.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from daenr_fast import ops
from daenr_fast.models.joint import ModelOutput
from daenr_fast.models.readouts import activate
from daenr_fast.train.config import PAPER_SCALING, TrainConfig, check_reduction

#: every loss term name, in logging order
TERMS = ("reconstruction", "kl", "vq", "response", "readout_reg")
#: the terms of the image (alpha) part and of the response (beta) part
IMAGE_TERMS, RESPONSE_TERMS = ("reconstruction", "kl", "vq"), ("response", "readout_reg")


def reconstruction_loss(x_hat: Tensor, x: Tensor, reduction: str = PAPER_SCALING[0]) -> Tensor:
    """Squared error reduced over each image's pixels (``"sum"`` or ``"mean"``), averaged over the batch.

    x_hat, x (..., B, C, H, W) -> (...) (a scalar for one model).
    """
    check_reduction("recon_reduction", reduction)
    err = (x_hat - x).pow(2).flatten(-3)
    per_image = err.sum(-1) if reduction == "sum" else err.mean(-1)
    return per_image.mean(-1)


def response_loss(z: Tensor, s: Tensor, kind: str = "poisson", activation: str = "elu1",
                  reduction: str = PAPER_SCALING[1]) -> Tensor:
    """Response loss reduced over each image's neurons (``"sum"`` or ``"mean"``), averaged over the batch.

    z (readout pre-activation), s (..., B, n) -> (...) (a scalar for one model); see the module docstring.
    """
    check_reduction("response_reduction", reduction)
    if kind == "poisson":
        if z.dim() == 2:  # one model: the fused op reduces (every image has the same n neurons)
            total = ops.poisson_loss(z, s, activation=activation, reduction=reduction)
            return total / z.shape[0] if reduction == "sum" else total
        per_value = ops.poisson_loss(z, s, activation=activation, reduction="none")
    else:
        per_value = (activate(z, activation) - s).pow(2)
    per_image = per_value.sum(-1) if reduction == "sum" else per_value.mean(-1)
    return per_image.mean(-1)


def loss_terms(model: nn.Module, out: ModelOutput, images: Tensor, responses: Tensor,
               config: TrainConfig) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Weighted total loss and the unweighted terms by name (all scalars with gradient)."""
    terms: Dict[str, Tensor] = {}
    if out.reconstruction is not None:
        terms["reconstruction"] = reconstruction_loss(out.reconstruction, images, config.recon_reduction)
        terms.update(out.aux_losses)
    if out.response is not None:
        terms["response"] = response_loss(out.response, responses, config.response_loss,
                                          config.response_activation, config.response_reduction)
        if config.readout_reg > 0:
            terms["readout_reg"] = model.readout_regularizer()
    weights = term_weights(config)
    total = sum(weights[name] * value for name, value in terms.items())
    return total, terms


def term_weights(config: TrainConfig) -> Dict[str, float]:
    """The weight of every term in the total: alpha, alpha * kl_weight, alpha, beta, beta * readout_reg."""
    return {"reconstruction": config.alpha, "kl": config.alpha * config.kl_weight, "vq": config.alpha,
            "response": config.beta, "readout_reg": config.beta * config.readout_reg}


def first_non_finite(total: Tensor, terms: Dict[str, Tensor]):
    """Name of the first non-finite term (``"total"`` if only the weighted sum is), or None (one device sync)."""
    values = list(terms.values()) + [total]
    if bool(torch.isfinite(torch.stack([v.detach().float() for v in values])).all()):
        return None
    for name, value in terms.items():
        if not torch.isfinite(value).item():
            return name
    return None if torch.isfinite(total).item() else "total"
