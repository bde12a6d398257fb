"""The DAE-NR training loss, term by term.

For a batch of B images x (B,1,32,32), responses s (B,n) and a :class:`~daenr_fast.models.ModelOutput`::

    reconstruction = 1/B sum_b ||x_b - x_hat_b||^2                       (paper Eq. 4)
    kl, vq         = the autoencoder's extra terms (per image)            (VAE ELBO / VQ-VAE losses)
    response       = 1/B sum_{b,n} (r_bn - s_bn log(r_bn + 1e-8)),  r = act(z)   (paper Eq. 6; fused op)
                   or 1/B sum_{b,n} (act(z)_bn - s_bn)^2                 (response_loss="mse")
    readout_reg    = the readout's L1 sparsity penalty

    total = alpha * (reconstruction + kl_weight * kl + vq) + beta * (response + readout_reg_weight * readout_reg)

Terms a model does not have are absent from the returned dict.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from daenr_fast import ops
from daenr_fast.models.joint import ModelOutput
from daenr_fast.models.readouts import activate
from daenr_fast.train.config import TrainConfig

#: every loss term name, in logging order
TERMS = ("reconstruction", "kl", "vq", "response", "readout_reg")


def response_loss(z: Tensor, s: Tensor, kind: str = "poisson", activation: str = "elu1") -> Tensor:
    """Per-image response loss averaged over the batch; z, s (B,n) -> scalar (see the module docstring)."""
    if kind == "poisson":
        return ops.poisson_loss(z, s, activation=activation, reduction="sum") / z.shape[0]
    return (activate(z, activation) - s).pow(2).sum() / z.shape[0]


def loss_terms(model: nn.Module, out: ModelOutput, images: Tensor, responses: Tensor,
               config: TrainConfig) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Weighted total loss and the unweighted terms by name (all scalars with gradient)."""
    terms: Dict[str, Tensor] = {}
    image_part = images.new_zeros(())
    if out.reconstruction is not None:
        terms["reconstruction"] = (out.reconstruction - images).pow(2).sum() / images.shape[0]
        image_part = terms["reconstruction"]
        for name, value in out.aux_losses.items():
            terms[name] = value
            image_part = image_part + (config.kl_weight * value if name == "kl" else value)
    response_part = images.new_zeros(())
    if out.response is not None:
        terms["response"] = response_loss(out.response, responses, config.response_loss,
                                          config.response_activation)
        response_part = terms["response"]
        if config.readout_reg > 0:
            terms["readout_reg"] = model.readout_regularizer()
            response_part = response_part + config.readout_reg * terms["readout_reg"]
    total = (config.alpha * image_part if out.reconstruction is not None else 0.0) \
        + (config.beta * response_part if out.response is not None else 0.0)
    return total, terms


def first_non_finite(total: Tensor, terms: Dict[str, Tensor]):
    """Name of the first non-finite term (``"total"`` if only the weighted sum is), or None (one device sync)."""
    values = list(terms.values()) + [total]
    if bool(torch.isfinite(torch.stack([v.detach().float() for v in values])).all()):
        return None
    for name, value in terms.items():
        if not torch.isfinite(value).item():
            return name
    return None if torch.isfinite(total).item() else "total"
