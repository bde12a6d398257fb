"""Pure-PyTorch reference implementations: the truth every backend is tested against.

Written for clarity, not speed; autograd provides their gradients.
"""
from __future__ import annotations

import math

import torch


def factorized_readout(x: torch.Tensor, spatial: torch.Tensor, features: torch.Tensor,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """``y[b,n] = sum_c features[n,c] * sum_{h,w} spatial[n,h,w] * x[b,c,h,w] + bias[n]``.

    x (B,C,H,W), spatial (N,H,W), features (N,C), bias (N,) or None -> y (B,N); with leading model dimensions
    (*G) on all four (G stacked readouts, each on its own input): x (*G,B,C,H,W), spatial (*G,N,H,W), features
    (*G,N,C), bias (*G,N) -> y (*G,B,N).
    Half-precision inputs are accumulated in float32 and the result cast back.
    """
    dtype = x.dtype
    acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    pooled = torch.einsum("...bchw,...nhw->...bcn", x.to(acc), spatial.to(acc))
    y = torch.einsum("...bcn,...nc->...bn", pooled, features.to(acc))
    if bias is not None:
        y = y + bias.to(acc).unsqueeze(-2)
    return y.to(dtype)


POISSON_ACTIVATIONS = ("identity", "elu1", "softplus", "exp")


def poisson_rate(z: torch.Tensor, activation: str) -> torch.Tensor:
    """The rate ``r = act(z)``: identity ``z``; elu1 ``ELU(z) + 1`` (``z + 1`` for z > 0, ``exp(z)`` otherwise);
    softplus ``log(1 + exp(z))``; exp ``exp(z)``."""
    if activation == "identity":
        return z
    if activation == "elu1":
        # exp of z where z <= 0 (0 elsewhere, where it is not taken): its derivative at z = 0 is exp(0) = 1, the
        # true one, on every torch (clamp(max=0) passes no gradient at the bound since torch 2.14)
        return torch.where(z > 0, z + 1, torch.exp(torch.where(z > 0, torch.zeros_like(z), z)))
    if activation == "softplus":
        return torch.nn.functional.softplus(z)
    if activation == "exp":
        return torch.exp(z)
    raise ValueError(f"activation must be one of {POISSON_ACTIVATIONS}, got {activation!r}")


def poisson_loss(z: torch.Tensor, target: torch.Tensor, activation: str = "identity", eps: float = 1e-8,
                 reduction: str = "mean", per_neuron: bool = False, full: bool = False) -> torch.Tensor:
    """Poisson negative log-likelihood of ``target`` under the rate ``r = act(z)`` (up to ``log(target!)``).

    Per element ``l = r - target * log(r + eps)``; for ``activation="exp"`` the log-rate is ``z`` itself:
    ``l = exp(z) - target * z``. ``full=True`` adds the Stirling approximation of ``log(target!)``,
    ``target*log(target) - target + 0.5*log(2*pi*target)``, where ``target > 1`` (as ``torch.nn.PoissonNLLLoss``).

    z, target (..., N) of one shape. ``reduction`` ``"mean"``/``"sum"`` over every element, or ``"none"`` (the
    shape of z); ``per_neuron=True`` reduces over all leading dimensions only, giving (N,).
    Half-precision inputs are computed in float32 and the result cast back.
    """
    dtype = z.dtype
    acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    z, target = z.to(acc), target.to(acc)
    if activation == "exp":
        loss = torch.exp(z) - target * z
    else:
        rate = poisson_rate(z, activation)
        loss = rate - target * torch.log(rate + eps)
    if full:
        safe = torch.where(target > 1, target, torch.ones_like(target))
        stirling = safe * torch.log(safe) - safe + 0.5 * torch.log(2 * torch.pi * safe)
        loss = loss + torch.where(target > 1, stirling, torch.zeros_like(stirling))
    if per_neuron:
        loss = loss.reshape(math.prod(loss.shape[:-1]), loss.shape[-1])
        loss = loss.mean(0) if reduction == "mean" else loss.sum(0)
    elif reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(dtype)


def vq_lookup(z: torch.Tensor, codebook: torch.Tensor, chunk: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code of every row: ``idx[m] = argmin_k ||z[m] - codebook[k]||^2`` and that squared distance.

    z (M,D), codebook (K,D) -> idx (M,) int64, dist (M,) in float64 for float64 inputs, float32 otherwise.
    Every squared distance is summed in float64 from the differences themselves (no expanded square, so nothing
    cancels), a block of rows at a time (at most ``chunk`` differences held). Ties go to the lowest index.

    NaN rule: a distance is NaN when z[m] or codebook[k] has a NaN component (or an infinite component meets an
    infinite one of the same sign). NaN distances are never chosen; +inf ones are ordinary (ties at +inf go to the
    lowest index). A row whose every distance is NaN (z[m] has a NaN, or every code does) gets idx 0 and dist NaN.

    ``dist`` is recomputed from the chosen codes, so it is differentiable in z and codebook.
    """
    out_dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    z64, e64 = z.to(torch.float64), codebook.to(torch.float64)
    rows = max(1, chunk // max(1, codebook.shape[0] * codebook.shape[1]))
    parts = []
    with torch.no_grad():
        for blk in z64.split(rows):
            d = (blk[:, None, :] - e64[None]).square().sum(2)  # (rows, K), NaN where the rule says so
            best = d.masked_fill(d.isnan(), math.inf).amin(1, keepdim=True)
            hit = d == best  # never true for NaN; the first hit is the lowest index
            parts.append(torch.where(hit.any(1), hit.to(torch.int8).argmax(1), 0))
    idx = torch.cat(parts) if parts else z.new_empty((0,), dtype=torch.int64)
    dist = ((z64 - e64[idx]) ** 2).sum(1)
    return idx, dist.to(out_dtype)


def gaussian_readout(x: torch.Tensor, grid: torch.Tensor, features: torch.Tensor, bias: torch.Tensor | None = None,
                     align_corners: bool = True) -> torch.Tensor:
    """``y[b,n] = sum_c features[c,n] * bilinear(x[b,c], grid[b,n]) + bias[n]`` with ``F.grid_sample`` (bilinear,
    zero padding) at the positions ``grid`` (x then y, in [-1, 1]).

    x (B,C,H,W), grid (B,N,2) or (N,2) (the same positions for every batch entry), features (C,N), bias (N,) or
    None -> y (B,N). Half-precision inputs are computed in float32 and the result cast back.
    """
    dtype = x.dtype
    acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    b, n = x.shape[0], features.shape[1]
    positions = (grid.expand(b, n, 2) if grid.dim() == 2 else grid).to(acc).reshape(b, n, 1, 2)
    sampled = torch.nn.functional.grid_sample(x.to(acc), positions, mode="bilinear", padding_mode="zeros",
                                              align_corners=align_corners)  # (B,C,N,1)
    y = (sampled[..., 0] * features.to(acc)).sum(1)
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(dtype)
