"""Fused factorized readout: the op definition, its public function and its backends.

    y[b,n] = sum_c features[n,c] * sum_{h,w} spatial[n,h,w] * x[b,c,h,w] + bias[n]

x (B,C,H,W), spatial (N,H,W), features (N,C), bias (N,) or None -> y (B,N). With G[b,c,n] = dy[b,n] features[n,c]
the gradients are

    dx[b,c,h,w]  = sum_n G[b,c,n] spatial[n,h,w]
    dspatial[n,h,w] = sum_{b,c} G[b,c,n] x[b,c,h,w]
    dfeatures[n,c]  = sum_b dy[b,n] sum_{h,w} spatial[n,h,w] x[b,c,h,w]
    dbias[n]        = sum_b dy[b,n]

The fused backends never hold the (B,C,N) or (B,N,H*W) tensors: they work on blocks of bounded size. The
gradients are linear in (dy, x, spatial, features), so a backward that builds a graph (``create_graph=True``,
second derivatives) computes them with the differentiable formula of the torch backend instead of a kernel.
vmap over stacked readouts (spatial/features/bias with a leading model dimension) folds the models into the
neuron dimension; over stacked inputs, into the batch dimension; over both (G readouts, each on its own input: grid
training), and in the backward, the torch formulas run once with the model dimension as a matmul batch, up to
:data:`STACKED_MAX_ELEMENTS` elements of their (G,B,C,N) intermediate (one call per model beyond).

Float32 precision of the Triton backend (:func:`set_float32_precision`, or the ``DAENR_FAST_READOUT_PRECISION``
variable; the torch, cpu and cuda backends always multiply float32 exactly):

* ``"tf32x3"`` (default): split precision on tensor cores. Each float32 operand a is a = hi + lo with hi = tf32(a)
  and lo = tf32(a - hi); a*b is computed as hi_a hi_b + hi_a lo_b + lo_a hi_b. The dropped lo_a lo_b and the
  rounding of the low parts leave a relative error per product of at most 3u^2 (u = 2^-10, the TF32 unit
  roundoff when the tensor cores truncate; 2^-11 when they round to nearest): float32 accuracy at the readout's
  sizes (inside the float32 test tolerance of the float64 reference).
* ``"ieee"``: FMA units, exact float32 products (per product 2^-24, plus 2^-24 where a gradient kernel rounds a
  product of two factors, gy[b,n] w[n,c], to float32 before its dot).
* ``"tf32"``: one TF32 product, an explicit opt-in: each factor is rounded to 10 mantissa bits, so a product is
  off by up to 2u + u^2 relative (u = 2^-10 truncating), and a result by up to that times sum |terms|
  (e.g. y[b,n]: sum_{c,p} |x[b,c,p] m[n,p] w[n,c]|), some 2e-3 of it, against float32's ~1e-7.

:data:`PRODUCT_ERROR` holds these bounds (relative error of one product; with float32 accumulation on top, the
error of a result is at most PRODUCT_ERROR * sum |terms| plus float32 summation error). fp16/bf16 inputs are
multiplied exactly in every precision.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from daenr_fast import _build, _dispatch, _validate
from daenr_fast.ops import reference
from daenr_fast.ops._define import STANDARD_DTYPES, OpDef, define, gradients_like_first_input


#: The float32 precisions of the Triton backend, the default first.
FLOAT32_PRECISIONS = ("tf32x3", "ieee", "tf32")
DEFAULT_FLOAT32_PRECISION = FLOAT32_PRECISIONS[0]
PRECISION_ENV = "DAENR_FAST_READOUT_PRECISION"
_TF32_UNIT = 2.0 ** -10  # TF32 unit roundoff when the tensor cores truncate (2^-11 when they round to nearest)

#: precision -> bound on the relative error of one float32 product of the Triton backend (see the module docstring):
#: the factor error (1 + e_a)(1 + e_b) - 1, plus 2^-23 for the float32 rounding of the product and of an operand
#: that is itself a product (gy[b,n] w[n,c] in the gradient kernels).
PRODUCT_ERROR = {
    "tf32x3": 3 * _TF32_UNIT ** 2 + 2.0 ** -23,
    "ieee": 2.0 ** -23,
    "tf32": 2 * _TF32_UNIT + _TF32_UNIT ** 2 + 2.0 ** -23,
}

_precision: Optional[str] = None
#: largest G*B*C*N for which vmap runs G readouts on G inputs (and any batched backward) as one batched torch
#: computation (its (G,B,C,N) intermediate: 256 MB in float32); larger ones run one fused call per model
STACKED_MAX_ELEMENTS = 2 ** 26


def set_float32_precision(precision: Optional[str]) -> None:
    """Set the precision of the Triton backend's float32 dots for this process: one of
    :data:`FLOAT32_PRECISIONS`, or None for ``DAENR_FAST_READOUT_PRECISION`` (default ``"tf32x3"``). Calls already
    captured in a CUDA graph keep the precision they were captured with."""
    global _precision
    if precision is not None:
        _check_precision(precision, "precision")
    _precision = precision


def get_float32_precision() -> str:
    """The precision of the Triton backend's float32 dots (see :func:`set_float32_precision`)."""
    if _precision is not None:
        return _precision
    value = os.environ.get(PRECISION_ENV) or DEFAULT_FLOAT32_PRECISION
    _check_precision(value, PRECISION_ENV)
    return value


def _check_precision(value, name: str) -> None:
    if value not in FLOAT32_PRECISIONS:
        raise ValueError(f"{name} must be one of {FLOAT32_PRECISIONS}, got {value!r}")


def factorized_readout(x: Tensor, spatial: Tensor, features: Tensor, bias: Optional[Tensor] = None, *,
                       backend: Optional[str] = None) -> Tensor:
    """Factorized (mask x features) readout of a feature map, fused; see the module docstring for the math.

    Args:
        x: feature map (B,C,H,W).
        spatial: per-neuron spatial masks (N,H,W).
        features: per-neuron feature weights (N,C).
        bias: per-neuron bias (N,) or None.
        backend: ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; None chooses (see :mod:`daenr_fast._dispatch`).
            The Triton backend's float32 precision is :func:`get_float32_precision`.

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
    chosen = _dispatch.resolve_backend(OP.name, backend, x.device, x.dtype, work=x.numel() * n)
    return OP(x.contiguous(), spatial.contiguous(), features.contiguous(),
              None if bias is None else bias.contiguous(), chosen)


# ----------------------------------------------------------------------------------------------- backends

def _torch_forward(x, spatial, features, bias):
    return reference.factorized_readout(x, spatial, features, bias)


def _torch_backward(grad, x, spatial, features):
    """(dx, dspatial, dfeatures, dbias) in the accumulation dtype; differentiable (used for second derivatives).

    grad (*G,B,N), x (*G,B,C,H,W), spatial (*G,N,H,W), features (*G,N,C): the same leading model dimensions *G
    (none for one readout) on all four.
    """
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    *lead, b, c, h, w = x.shape
    n = spatial.shape[-3]
    gy, m, wt = grad.to(acc), spatial.to(acc).reshape(*lead, n, h * w), features.to(acc)
    xs = x.to(acc).reshape(*lead, b * c, h * w)
    pooled = (xs @ m.transpose(-1, -2)).view(*lead, b, c, n)
    g = (gy.unsqueeze(-2) * wt.transpose(-1, -2).unsqueeze(-3)).reshape(*lead, b * c, n)
    grad_x = (g @ m).view(*lead, b, c, h, w)
    grad_spatial = (g.transpose(-1, -2) @ xs).view(*lead, n, h, w)
    grad_features = (gy.unsqueeze(-2) * pooled).sum(-3).transpose(-1, -2)
    return grad_x, grad_spatial, grad_features, gy.sum(-2)


def _ext_forward(x, spatial, features, bias):
    _build.load_extension(OP.name)  # a no-op once loaded; needed when the custom op is called directly
    return torch.ops.daenr_fast_ext.factorized_readout_forward(x, spatial, features, bias)


def _ext_backward(grad, x, spatial, features):
    _build.load_extension(OP.name)
    return torch.ops.daenr_fast_ext.factorized_readout_backward(grad.contiguous(), x, spatial, features)


def _triton_forward(x, spatial, features, bias):
    from daenr_fast.kernels import factorized_readout as kernel

    return kernel.forward(x, spatial, features, bias, precision=get_float32_precision())


def _triton_backward(grad, x, spatial, features):
    from daenr_fast.kernels import factorized_readout as kernel

    return kernel.backward(grad.contiguous(), x, spatial, features, precision=get_float32_precision())


# ----------------------------------------------------------------------------------------------- autograd

def _fake(x, spatial, features, bias):
    return x.new_empty((x.shape[0], spatial.shape[0]))


def _backward_fake(grad, x, spatial, features):
    return (torch.empty_like(x), torch.empty_like(spatial), torch.empty_like(features),
            spatial.new_empty((spatial.shape[0],)))


def _setup_context(ctx, inputs, output):
    x, spatial, features, bias, backend = inputs
    ctx.save_for_backward(x, spatial, features)
    ctx.backend = backend
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, spatial, features = ctx.saved_tensors
    if torch.is_grad_enabled():  # building a graph of the gradients: the differentiable formula
        gx, gm, gw, gb = (g.to(x.dtype) for g in _torch_backward(grad, x, spatial, features))
    else:
        gx, gm, gw, gb = OP.run_backward(grad, x, spatial, features, ctx.backend)
    return gx, gm, gw, (gb if ctx.has_bias else None), None


def _stacked(size, tensors, dims):
    """``tensors`` with their vmap dimension (``dims``) moved to the front, unbatched ones expanded to ``size``."""
    return [None if t is None else (t.movedim(d, 0) if d is not None else t.expand(size, *t.shape))
            for t, d in zip(tensors, dims)]


def _fits_stacked(size, x, spatial) -> bool:
    """Whether G readouts on G inputs fit one batched computation (:data:`STACKED_MAX_ELEMENTS`)."""
    b, c = x.shape[-4:-2]
    return size * b * c * spatial.shape[-3] <= STACKED_MAX_ELEMENTS


def _vmap(info, in_dims, x, spatial, features, bias, backend):
    """Batched readouts as one call: stacked parameters fold into the neuron dimension, stacked inputs into the
    batch dimension; both stacked at once run the torch formula batched over the models (one call per model
    beyond :data:`STACKED_MAX_ELEMENTS`)."""
    x_dim, *param_dims = in_dims[:4]
    size = info.batch_size
    if x_dim is not None and any(d is not None for d in param_dims):
        x = x.movedim(x_dim, 0)
        params = _stacked(size, (spatial, features, bias), param_dims)
        if _fits_stacked(size, x, params[0]):
            return _torch_forward(x, *params), 0
        out = [OP.custom_op(x[i].contiguous(), *(None if p is None else p[i].contiguous() for p in params), backend)
               for i in range(size)]
        return torch.stack(out), 0
    if x_dim is not None:
        x = x.movedim(x_dim, 0)
        y = OP.custom_op(x.reshape(-1, *x.shape[2:]).contiguous(), spatial, features, bias, backend)
        return y.view(size, x.shape[1], -1), 0
    params = _stacked(size, (spatial, features, bias), param_dims)
    spatial, features, bias = (None if p is None else p.reshape(-1, *p.shape[2:]).contiguous() for p in params)
    y = OP.custom_op(x, spatial, features, bias, backend)
    return y.view(x.shape[0], size, -1), 1


def _backward_vmap(info, in_dims, grad, x, spatial, features, backend):
    """The gradients of batched readouts (each entry its own gradients, as the vmap of the backward promises): the
    torch formula batched over the entries, or one backward call per entry beyond :data:`STACKED_MAX_ELEMENTS`."""
    size = info.batch_size
    grad, x, spatial, features = _stacked(size, (grad, x, spatial, features), in_dims[:4])
    if _fits_stacked(size, x, spatial):
        out = tuple(g.to(x.dtype).contiguous() for g in _torch_backward(grad, x, spatial, features))
    else:
        per_entry = [OP.run_backward(grad[i].contiguous(), x[i].contiguous(), spatial[i].contiguous(),
                                     features[i].contiguous(), backend) for i in range(size)]
        out = tuple(torch.stack(parts) for parts in zip(*per_entry))
    return out, (0, 0, 0, 0)


OP = define(OpDef(
    name="factorized_readout",
    schema="(Tensor x, Tensor spatial, Tensor features, Tensor? bias, str backend) -> Tensor",
    kernels={"torch": _torch_forward, "cpu": _ext_forward, "cuda": _ext_forward, "triton": _triton_forward},
    dtypes=STANDARD_DTYPES,
    fake=_fake,
    setup_context=_setup_context,
    backward=_backward,
    vmap=_vmap,
    backward_schema="(Tensor grad, Tensor x, Tensor spatial, Tensor features, str backend)"
                    " -> (Tensor, Tensor, Tensor, Tensor)",
    backward_kernels={name: gradients_like_first_input(k) for name, k in
                      {"torch": _torch_backward, "cpu": _ext_backward, "cuda": _ext_backward,
                       "triton": _triton_backward}.items()},
    backward_fake=_backward_fake,
    backward_vmap=_backward_vmap,
))
