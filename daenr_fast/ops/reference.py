"""Pure-PyTorch reference implementations: the truth every backend is tested against.

Written for clarity, not speed; autograd provides their gradients.
"""
from __future__ import annotations

import torch


def factorized_readout(x: torch.Tensor, spatial: torch.Tensor, features: torch.Tensor,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """``y[b,n] = sum_c features[n,c] * sum_{h,w} spatial[n,h,w] * x[b,c,h,w] + bias[n]``.

    x (B,C,H,W), spatial (N,H,W), features (N,C), bias (N,) or None -> y (B,N).
    Half-precision inputs are accumulated in float32 and the result cast back.
    """
    dtype = x.dtype
    acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    pooled = torch.einsum("bchw,nhw->bcn", x.to(acc), spatial.to(acc))
    y = torch.einsum("bcn,nc->bn", pooled, features.to(acc))
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(dtype)
