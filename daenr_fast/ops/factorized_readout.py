"""Fused factorized readout: public function, torch custom op, autograd, backend dispatch.

    y[b,n] = sum_c features[n,c] * sum_{h,w} spatial[n,h,w] * x[b,c,h,w] + bias[n]

x (B,C,H,W), spatial (N,H,W), features (N,C), bias (N,) or None -> y (B,N). With G[b,c,n] = dy[b,n] features[n,c]
the gradients are

    dx[b,c,h,w]  = sum_n G[b,c,n] spatial[n,h,w]
    dspatial[n,h,w] = sum_{b,c} G[b,c,n] x[b,c,h,w]
    dfeatures[n,c]  = sum_b dy[b,n] sum_{h,w} spatial[n,h,w] x[b,c,h,w]
    dbias[n]        = sum_b dy[b,n]

The fused backends never hold the (B,C,N) or (B,N,H*W) tensors: they work on blocks of bounded size.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from daenr_fast import _build, _validate
from daenr_fast._dispatch import resolve_backend
from daenr_fast.ops import reference
from daenr_fast.ops._eager import eager_or_custom_op, tracing

OP = "factorized_readout"

SUPPORTED_DTYPES = {
    "torch": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
    "triton": (torch.float16, torch.bfloat16, torch.float32),
}


def factorized_readout(x: Tensor, spatial: Tensor, features: Tensor, bias: Optional[Tensor] = None, *,
                       backend: Optional[str] = None) -> Tensor:
    """Factorized (mask x features) readout of a feature map, fused; see the module docstring for the math.

    Args:
        x: feature map (B,C,H,W).
        spatial: per-neuron spatial masks (N,H,W).
        features: per-neuron feature weights (N,C).
        bias: per-neuron bias (N,) or None.
        backend: ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; None chooses (see :mod:`daenr_fast._dispatch`).

    Returns:
        y (B,N), the dtype of ``x`` (half types accumulate in float32).
    """
    _validate.check_tensor(x, "x", 4, "(B,C,H,W)")
    _validate.check_tensor(spatial, "spatial", 3, "(N,H,W)")
    _validate.check_tensor(features, "features", 2, "(N,C)")
    if bias is not None:
        _validate.check_tensor(bias, "bias", 1, "(N,)")
    _validate.check_same_dtype_device(x=x, spatial=spatial, features=features, bias=bias)
    _, c, h, w = x.shape
    n = spatial.shape[0]
    if spatial.shape[1:] != (h, w):
        raise ValueError(f"spatial must have shape (N,H,W)=(N,{h},{w}) to match x (B,C,H,W)={tuple(x.shape)}, "
                         f"got {tuple(spatial.shape)}")
    if features.shape != (n, c):
        raise ValueError(f"features must have shape (N,C)=({n},{c}) to match spatial (N={n}) and x (C={c}), "
                         f"got {tuple(features.shape)}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must have shape (N,)=({n},), got {tuple(bias.shape)}")
    chosen = resolve_backend(OP, backend, x.device, x.dtype, work=x.numel() * n)
    _validate.check_backend_dtype(chosen, x.dtype, SUPPORTED_DTYPES)
    args = (x.contiguous(), spatial.contiguous(), features.contiguous(), None if bias is None else bias.contiguous(),
            chosen)
    return _call_readout(*args)


# ----------------------------------------------------------------------------------------------- backends

def _torch_forward(x, spatial, features, bias):
    return reference.factorized_readout(x, spatial, features, bias)


def _torch_backward(grad, x, spatial, features):
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    b, c, h, w = x.shape
    n = spatial.shape[0]
    gy, m, wt = grad.to(acc), spatial.to(acc).reshape(n, h * w), features.to(acc)
    xs = x.to(acc).reshape(b * c, h * w)
    pooled = (xs @ m.t()).view(b, c, n)
    g = (gy[:, None, :] * wt.t()[None]).reshape(b * c, n)
    grad_x = (g @ m).view(b, c, h, w)
    grad_spatial = (g.t() @ xs).view(n, h, w)
    grad_features = (gy[:, None, :] * pooled).sum(0).t()
    return grad_x, grad_spatial, grad_features, gy.sum(0)


def _ext_forward(x, spatial, features, bias):
    _build.load_extension(OP)  # a no-op once loaded; needed when the custom op is called directly
    return torch.ops.daenr_fast_ext.factorized_readout_forward(x, spatial, features, bias)


def _ext_backward(grad, x, spatial, features):
    _build.load_extension(OP)
    return torch.ops.daenr_fast_ext.factorized_readout_backward(grad.contiguous(), x, spatial, features)


def _triton_forward(x, spatial, features, bias):
    from daenr_fast.kernels import factorized_readout as kernel

    return kernel.forward(x, spatial, features, bias)


def _triton_backward(grad, x, spatial, features):
    from daenr_fast.kernels import factorized_readout as kernel

    return kernel.backward(grad.contiguous(), x, spatial, features)


_FORWARD = {"torch": _torch_forward, "cpu": _ext_forward, "cuda": _ext_forward, "triton": _triton_forward}
_BACKWARD = {"torch": _torch_backward, "cpu": _ext_backward, "cuda": _ext_backward, "triton": _triton_backward}


# ----------------------------------------------------------------------------------------------- custom op

def _readout(x: Tensor, spatial: Tensor, features: Tensor, bias: Optional[Tensor], backend: str) -> Tensor:
    return _FORWARD[backend](x, spatial, features, bias)


def _readout_backward(grad: Tensor, x: Tensor, spatial: Tensor, features: Tensor,
                      backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gx, gm, gw, gb = _BACKWARD[backend](grad, x, spatial, features)
    return gx.to(x.dtype), gm.to(x.dtype), gw.to(x.dtype), gb.to(x.dtype)


_readout_op = torch.library.custom_op("daenr_fast::factorized_readout", _readout, mutates_args=())


@_readout_op.register_fake
def _(x, spatial, features, bias, backend):
    return x.new_empty((x.shape[0], spatial.shape[0]))


_readout_backward_op = torch.library.custom_op("daenr_fast::factorized_readout_backward", _readout_backward,
                                               mutates_args=())


@_readout_backward_op.register_fake
def _(grad, x, spatial, features, backend):
    return (torch.empty_like(x), torch.empty_like(spatial), torch.empty_like(features),
            spatial.new_empty((spatial.shape[0],)))


def _setup_context(ctx, inputs, output):
    x, spatial, features, bias, backend = inputs
    ctx.save_for_backward(x, spatial, features)
    ctx.backend = backend
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, spatial, features = ctx.saved_tensors
    run = _readout_backward_op if tracing(grad, x, spatial, features) else _readout_backward
    gx, gm, gw, gb = run(grad, x, spatial, features, ctx.backend)
    return gx, gm, gw, (gb if ctx.has_bias else None), None


_readout_op.register_autograd(_backward, setup_context=_setup_context)
_call_readout = eager_or_custom_op(_readout_op, "ReadoutFunction", _readout, _setup_context, _backward)
