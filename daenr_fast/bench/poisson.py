"""Benchmark cases of the Poisson loss, forward and backward, with the ``elu1`` rate ``r = ELU(z) + 1``.

``loss = mean(r - s * log(r + eps))`` over z, s (B,N); the timed call computes the loss and its gradient for z.

Implementations

* ``reference`` - :func:`daenr_fast.ops.reference.poisson_loss` (``torch.where`` rate, autograd);
* ``eager (analytic grad)`` - the fastest eager formulation found: ``F.elu(z) + 1``, the sum of the rate minus a
  ``torch.dot`` of the counts with the log-rate, and the gradient written out,
  ``(1 - s/(r+eps)) * min(r, 1) / numel``, in a custom autograd Function;
* ``torch.compile(reference)``;
* ``daenr:<backend>`` - :func:`daenr_fast.ops.poisson_loss` on every available backend (default arguments);
* ``limit (copy)`` - ``Tensor.copy_`` of 1.5*B*N floats: the same bytes the fused pass must move
  (read z and s, write dz: ``12*B*N`` bytes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from daenr_fast.bench.cases import Impl, compiled, max_relative_error, unavailable, with_grads

OP = "poisson"
OP_NAME = "poisson_loss"
ACTIVATION = "elu1"
EPS = 1e-8
SHAPE_NAMES = ("B", "N")
MODES = ("fwd+bwd",)
SIZES = {
    "tiny": (5, 7),
    "paper": (64, 103),
    "sensorium": (32, 8000),
    "mid": (256, 8000),
    "large": (2048, 1024),
}
TOLERANCE = {"float32": 1e-4, "float64": 1e-10, "float16": 2e-2, "bfloat16": 5e-2}


def make_inputs(shape: tuple, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """z ~ N(0,1) (B,N) and Poisson counts s drawn at the rate ELU(z)+1, with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=gen)
    s = torch.poisson(F.elu(z) + 1, generator=gen)
    return {"z": z.to(device=device, dtype=dtype), "target": s.to(device=device, dtype=dtype)}


def bytes_moved(shape: tuple) -> int:
    """Bytes a fused forward+backward must move in float32: read z and s, write dz."""
    b, n = shape
    return 12 * b * n


def reference_forward(z, target):
    """The reference loss (mean, elu1)."""
    from daenr_fast.ops import reference

    return reference.poisson_loss(z, target, activation=ACTIVATION, eps=EPS)


class _AnalyticElu1Poisson(torch.autograd.Function):
    """Mean Poisson loss of the elu1 rate with its gradient written out (few kernels, no autograd graph)."""

    @staticmethod
    def forward(ctx, z, target):
        rate = F.elu(z).add_(1)
        denom = rate + EPS
        log_denom = torch.log(denom)
        loss = (rate.sum() - torch.dot(target.reshape(-1), log_denom.reshape(-1))) / z.numel()
        ctx.save_for_backward(rate, denom, target)
        return loss

    @staticmethod
    def backward(ctx, grad):
        rate, denom, target = ctx.saved_tensors
        dz = torch.div(target, denom).neg_().add_(1).mul_(rate.clamp(max=1)).mul_(grad / rate.numel())
        return dz, None


def eager_forward(z, target):
    """The analytic-gradient eager formulation (see the module docstring)."""
    return _AnalyticElu1Poisson.apply(z, target)


def implementations(inputs: dict, mode: str, device: torch.device, compile: bool = True) -> list[Impl]:
    """Every implementation of the case (see the module docstring); missing ops/backends as reported rows."""
    from daenr_fast import _dispatch, ops

    z = inputs["z"].detach().clone().requires_grad_(True)
    s = inputs["target"]

    def runner(forward):
        return with_grads(lambda: forward(z, s), (z,), None)

    impls = [Impl("reference", "reference", runner(reference_forward)),
             Impl("eager (analytic grad)", "eager", runner(eager_forward))]
    if compile:
        impls.append(Impl("torch.compile(reference)", "compile", runner(compiled(reference_forward))))
    else:
        impls.append(unavailable("torch.compile(reference)", "compile", "skipped (--no-compile or --quick)"))
    op = ops.poisson_loss
    for backend in ops.OPS[OP_NAME].backends:
        name = f"daenr:{backend}"
        ok, why = _dispatch.backend_status(OP_NAME, backend, device, inputs["z"].dtype)
        if not ok:
            impls.append(unavailable(name, "backend", f"not available: {why}"))
            continue

        def forward(zz, ss, _backend=backend):
            return op(zz, ss, activation=ACTIVATION, eps=EPS, backend=_backend)

        impls.append(Impl(name, "backend", runner(forward)))
    numel = (3 * z.numel() + 1) // 2
    src = torch.randn(numel, device=device, dtype=z.dtype)
    dst = torch.empty_like(src)
    impls.append(Impl("limit (copy)", "limit", lambda: dst.copy_(src), comparable=False,
                      note=f"copy of {numel} elements"))
    return impls


def compare(ref_out, out, inputs: dict) -> float:
    """Largest relative error of the loss and of dz."""
    return max_relative_error(ref_out, out)
