"""The gradient-share diagnostic: how much of the shared encoder's gradient each loss term sends.

For one training batch, with the weighted terms w_t * L_t of :func:`daenr_fast.train.losses.loss_terms`
(w = alpha for the reconstruction and VQ terms, alpha * kl_weight for KL, beta for the response) and
theta_enc = the parameters of the encoder blocks every term reaches (blocks 1..i of a DAE-NR_i model, the
whole encoder of an autoencoder baseline, the encoder of a CNN baseline)::

    g_t     = || d(w_t * L_t) / d theta_enc ||_2        (one L2 norm over all of theta_enc)
    share_t = g_t / sum_u g_u                            (the shares of a run add up to 1)

A term that does not reach theta_enc (the readout's L1 penalty) has no share. A model with one term (a CAE or a
CNN baseline) has share 1 for it; ``share_response`` is then 1 (CNN) or absent (autoencoder). In a DAE-NR model
``share_response`` near 0 means beta does not move the encoder the reconstruction shapes; near 1 means the
neural term dominates it. The trainer computes it at every evaluation step on that step's training batch
(one ``torch.autograd.grad`` per term on the step's graph; the update itself is unchanged).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping

import torch
from torch import Tensor, nn

from daenr_fast.train.losses import TERMS

#: prefix of the history.csv columns
COLUMN_PREFIX = "grad_share_"


def shared_encoder_parameters(model: nn.Module) -> List[nn.Parameter]:
    """theta_enc of the module docstring for a registry model (trainable parameters only)."""
    autoencoder = getattr(model, "autoencoder", None)
    has_readout = getattr(model, "readout", None) is not None
    if autoencoder is not None:
        blocks = autoencoder.encoder.blocks
        modules: Iterable[nn.Module] = blocks[:model.layer] if has_readout else blocks
    else:
        modules = [model.encoder]
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def gradient_norms(weighted: Mapping[str, Tensor], params: List[nn.Parameter]) -> Dict[str, float]:
    """g_t for each weighted term that reaches ``params`` (the graph is kept for the step's backward)."""
    norms = {}
    for name, value in weighted.items():
        if not value.requires_grad:
            continue
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        reached = [g for g in grads if g is not None]
        if reached:
            norms[name] = math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in reached))
    return norms


def shares(norms: Mapping[str, float]) -> Dict[str, float]:
    """share_t = g_t / sum_u g_u (NaN for every term when all norms are 0)."""
    total = sum(norms.values())
    return {name: (g / total if total > 0 else math.nan) for name, g in norms.items()}


def gradient_shares(model: nn.Module, terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Dict[str, float]:
    """The share of every term in the shared encoder's gradient for one batch; ``terms`` as returned by
    :func:`~daenr_fast.train.losses.loss_terms` (with their graph), ``weights`` from
    :func:`~daenr_fast.train.losses.term_weights`."""
    weighted = {name: weights[name] * value for name, value in terms.items()}
    return shares(gradient_norms(weighted, shared_encoder_parameters(model)))


def summary(history: List[dict]) -> dict:
    """The ``gradient_share`` entry of ``metrics.json`` from the trainer's history rows: the evaluation steps,
    each term's share at those steps, its mean over them and its last value."""
    rows = [row for row in history if any(k.startswith(COLUMN_PREFIX) for k in row)]
    names = [t for t in TERMS if any(COLUMN_PREFIX + t in row for row in rows)]
    out = {"definition": "share_t = ||d(w_t L_t)/d theta_enc|| / sum_u ||d(w_u L_u)/d theta_enc|| on a training "
                         "batch at each evaluation step (theta_enc: the encoder blocks every term reaches)",
           "steps": [row["step"] for row in rows], "by_term": {}, "mean": {}, "last": {}}
    for name in names:
        values = [row.get(COLUMN_PREFIX + name, math.nan) for row in rows]
        out["by_term"][name] = values
        finite = [v for v in values if math.isfinite(v)]
        out["mean"][name] = sum(finite) / len(finite) if finite else math.nan
        out["last"][name] = values[-1]
    return out
