"""Benchmark cases of the factorized readout ``y[b,n] = sum_c w[n,c] sum_hw m[n,h,w] x[b,c,h,w] + bias[n]``.

Implementations

* ``reference (einsum)`` - the neuralpredictors formulation (``bchw,nhw->bcn`` then ``bcn,nc->bn``, autograd);
* ``eager (mm+mul-sum)`` - the fastest eager formulation found: one ``torch.mm`` over (B*C, H*W) x (H*W, N), then
  a broadcast multiply with the features and a sum over C (autograd);
* ``torch.compile(reference)``;
* ``daenr:<backend>`` - :func:`daenr_fast.ops.factorized_readout` on every backend available on the device;
* ``limit (1 GEMM)`` - one ``torch.mm`` of (B*C, H*W) x (H*W, N): the FLOPs of the forward, ``2*B*C*H*W*N``.
  The same limit is the yardstick for forward+backward (whose exact computation costs three to four such GEMMs).
"""
from __future__ import annotations

import torch

from daenr_fast.bench.cases import Impl, compiled, leaves_for, max_relative_error, runner, unavailable

OP = "readout"
OP_NAME = "factorized_readout"
NAMES = ("x", "spatial", "features", "bias")  # the inputs of a case, in the op's order
SHAPE_NAMES = ("B", "C", "H", "W", "N")
MODES = ("fwd", "fwd+bwd")
SIZES = {
    "tiny": (3, 5, 4, 6, 7),
    "paper": (64, 48, 16, 16, 103),
    "mid": (128, 64, 16, 16, 1000),
    "sensorium": (32, 64, 28, 56, 8000),
}
TOLERANCE = {"float32": 1e-4, "float64": 1e-10, "float16": 2e-2, "bfloat16": 5e-2}


def make_inputs(shape: tuple, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """x (B,C,H,W), spatial (N,H,W), features (N,C), bias (N,), grad_out (B,N); normal(0,1) with ``seed``."""
    b, c, h, w, n = shape
    gen = torch.Generator().manual_seed(seed)

    def rand(*s):
        return torch.randn(*s, generator=gen).to(device=device, dtype=dtype)

    return {"x": rand(b, c, h, w), "spatial": rand(n, h, w) / (h * w) ** 0.5, "features": rand(n, c) / c ** 0.5,
            "bias": rand(n), "grad_out": rand(b, n)}


def flops(shape: tuple, mode: str = "fwd") -> int:
    """FLOPs of the forward GEMM (the limit), ``2*B*C*H*W*N``."""
    b, c, h, w, n = shape
    return 2 * b * c * h * w * n


def reference_forward(x, spatial, features, bias):
    """The neuralpredictors formulation: two einsums."""
    pooled = torch.einsum("bchw,nhw->bcn", x, spatial)
    return torch.einsum("bcn,nc->bn", pooled, features) + bias


def eager_forward(x, spatial, features, bias):
    """One GEMM over the pixels, then the feature weighting as a broadcast multiply and a sum over channels."""
    b, c, h, w = x.shape
    n = spatial.shape[0]
    pooled = torch.mm(x.reshape(b * c, h * w), spatial.reshape(n, h * w).t()).view(b, c, n)
    return (pooled * features.t()).sum(1) + bias


def implementations(inputs: dict, mode: str, device: torch.device, compile: bool = True) -> list[Impl]:
    """Every implementation of the case (see the module docstring); unavailable backends as reported rows."""
    from daenr_fast import _dispatch, ops

    leaves = leaves_for(inputs, NAMES, mode)
    g = inputs["grad_out"]
    impls = [Impl("reference (einsum)", "reference", runner(reference_forward, leaves, g, mode)),
             Impl("eager (mm+mul-sum)", "eager", runner(eager_forward, leaves, g, mode))]
    if compile:
        impls.append(Impl("torch.compile(reference)", "compile",
                          runner(compiled(reference_forward), leaves, g, mode)))
    else:
        impls.append(unavailable("torch.compile(reference)", "compile", "skipped (--no-compile or --quick)"))
    for backend in ops.OPS[OP_NAME].backends:
        ok, why = _dispatch.backend_status(OP_NAME, backend, device, inputs["x"].dtype)
        name = f"daenr:{backend}"
        if not ok:
            impls.append(unavailable(name, "backend", f"not available: {why}"))
            continue

        def forward(x, m, w, b, _backend=backend):
            return ops.factorized_readout(x, m, w, b, backend=_backend)

        impls.append(Impl(name, "backend", runner(forward, leaves, g, mode)))
    x, m = inputs["x"], inputs["spatial"]
    bc, p, n = x.shape[0] * x.shape[1], x.shape[2] * x.shape[3], m.shape[0]
    xm, mt = x.detach().reshape(bc, p), m.detach().reshape(n, p).t()
    impls.append(Impl("limit (1 GEMM)", "limit", lambda: torch.mm(xm, mt), comparable=False,
                      note=f"mm ({bc},{p})x({p},{n})"))
    return impls


def compare(ref_out, out, inputs: dict) -> float:
    """Largest relative error over the output and every gradient."""
    return max_relative_error(ref_out, out)
