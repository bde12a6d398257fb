"""VQ nearest-codebook lookup: the op definition, its public function and its backends.

    idx[m]  = argmin_k ||z[m] - codebook[k]||^2      (ties to the lowest k)
    dist[m] = ||z[m] - codebook[idx[m]]||^2

z (M,D), codebook (K,D) -> idx (M,) int64, dist (M,) (float64 for float64 inputs, float32 otherwise).
The backends use ``||e_k||^2 - 2 z_m . e_k`` blocked over the codebook and never hold the M x K matrix (the
torch backend holds at most ``_TORCH_CHUNK`` distances at a time). ``dist`` is differentiable:

    d dist[m] / d z[m]        =  2 (z[m] - codebook[idx[m]])
    d dist[m] / d codebook[k] = -2 (z[m] - codebook[k])   for k = idx[m]

The backward is written with differentiable torch operations, so second derivatives through ``dist`` are exact.
vmap over stacked inputs z (G,M,D) with one codebook folds G into M; stacked codebooks run one call per model.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from daenr_fast import _build, _dispatch, _validate
from daenr_fast.ops._define import OpDef, define

_TORCH_CHUNK = 1 << 22  # distances held at once by the torch backend
HALF_AND_SINGLE = (torch.float16, torch.bfloat16, torch.float32)


def vq_lookup(z: Tensor, codebook: Tensor, *, backend: Optional[str] = None) -> tuple[Tensor, Tensor]:
    """Nearest codebook entry of every row of ``z`` and its squared distance; see the module docstring.

    Args:
        z: vectors to quantize (M,D).
        codebook: codes (K,D), K >= 1, same dtype and device as z.
        backend: ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; None chooses (see :mod:`daenr_fast._dispatch`).

    Returns:
        (indices (M,) int64, squared distances (M,) float32, or float64 for float64 inputs).
    """
    _validate.check_tensor(z, "z", 2, "(M,D)")
    _validate.check_tensor(codebook, "codebook", 2, "(K,D)")
    _validate.check_same_dtype_device(z=z, codebook=codebook)
    if codebook.shape[1] != z.shape[1]:
        raise ValueError(f"codebook must have shape (K,D) with D={z.shape[1]} to match z (M,D)={tuple(z.shape)}, "
                         f"got {tuple(codebook.shape)}")
    if codebook.shape[0] == 0:
        raise ValueError("codebook must hold at least one code (K >= 1), got shape (0, D)")
    chosen = _dispatch.resolve_backend(OP.name, backend, z.device, z.dtype, work=z.numel() * codebook.shape[0])
    return OP(z.contiguous(), codebook.contiguous(), chosen)


def _dist_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------- backends

def _torch_forward(z, codebook):
    acc = _dist_dtype(z.dtype)
    e = codebook.to(acc)
    e_norm = (e * e).sum(1)
    rows = max(1, _TORCH_CHUNK // codebook.shape[0])
    idx, dist = [], []
    for blk in z.to(acc).split(rows):
        best, arg = torch.addmm(e_norm, blk, e.t(), beta=1, alpha=-2).min(dim=1)
        idx.append(arg)
        dist.append(((blk * blk).sum(1) + best).clamp_min(0))
    if not idx:
        return z.new_empty((0,), dtype=torch.int64), z.new_empty((0,), dtype=acc)
    return torch.cat(idx), torch.cat(dist)


def _ext_forward(z, codebook):
    _build.load_extension(OP.name)  # a no-op once loaded; needed when the op is called directly (e.g. a saved graph)
    idx, dist = torch.ops.daenr_fast_ext.vq_lookup_forward(z, codebook)
    return idx, dist.to(_dist_dtype(z.dtype))


def _triton_forward(z, codebook):
    from daenr_fast.kernels import vq_lookup as kernel

    return kernel.forward(z, codebook)


# ----------------------------------------------------------------------------------------------- autograd

def _fake(z, codebook):
    m = z.shape[0]
    return z.new_empty((m,), dtype=torch.int64), z.new_empty((m,), dtype=_dist_dtype(z.dtype))


def _setup_context(ctx, inputs, output):
    z, codebook, _ = inputs
    idx, _ = output
    ctx.mark_non_differentiable(idx)
    ctx.save_for_backward(z, codebook, idx)


def _backward(ctx, _grad_idx, grad_dist):
    z, codebook, idx = ctx.saved_tensors
    acc = _dist_dtype(z.dtype)
    diff = z.to(acc) - codebook.to(acc)[idx]
    grad_z = 2 * grad_dist.to(acc)[:, None] * diff
    grad_codebook = torch.zeros(codebook.shape, dtype=acc, device=codebook.device).index_add(0, idx, -grad_z)
    return grad_z.to(z.dtype), grad_codebook.to(codebook.dtype), None


def _vmap(info, in_dims, z, codebook, backend):
    """Stacked z with one codebook: one call over all rows; stacked codebooks: one call per model."""
    size = info.batch_size
    z_dim, e_dim = in_dims[:2]
    if e_dim is None:
        z = z.movedim(z_dim, 0)
        idx, dist = OP.custom_op(z.reshape(-1, z.shape[-1]).contiguous(), codebook, backend)
        return (idx.view(size, -1), dist.view(size, -1)), (0, 0)
    codebook = codebook.movedim(e_dim, 0)
    z = z.movedim(z_dim, 0) if z_dim is not None else z.expand(size, *z.shape)
    out = [OP.custom_op(z[i].contiguous(), codebook[i].contiguous(), backend) for i in range(size)]
    return (torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])), (0, 0)


OP = define(OpDef(
    name="vq_lookup",
    schema="(Tensor z, Tensor codebook, str backend) -> (Tensor, Tensor)",
    kernels={"torch": _torch_forward, "cpu": _ext_forward, "cuda": _ext_forward, "triton": _triton_forward},
    dtypes={"torch": HALF_AND_SINGLE + (torch.float64,), "cpu": (torch.float32, torch.float64),
            "cuda": HALF_AND_SINGLE, "triton": HALF_AND_SINGLE},
    fake=_fake,
    setup_context=_setup_context,
    backward=_backward,
    vmap=_vmap,
))
