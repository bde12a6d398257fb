"""Benchmark cases of the Gaussian readout ``y[b,n] = sum_c f[c,n] bilinear(x[b,c], grid[b,n]) + bias[n]``.

Implementations

* ``reference (grid_sample)`` - the neuralpredictors formulation (``FullGaussian2d.forward``):
  ``F.grid_sample(x, grid.view(B,N,1,2), align_corners=True)``, times the features, summed over channels (autograd;
  it holds the (B,C,N) samples and their products);
* ``torch.compile(reference)``;
* ``daenr:<backend>`` - :func:`daenr_fast.ops.gaussian_readout` on every backend available on the device;
* ``limit (1 GEMM)`` - one ``torch.mm`` of (4B, C) x (C, N): as many multiply-adds as the forward's four taps,
  ``4*B*C*N``, done densely. The same limit is the yardstick for forward+backward.

Positions are drawn per batch entry, uniform over the map (what FullGaussian2d samples in training with
``batch_sample=True``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from daenr_fast.bench.cases import Impl, compiled, leaves_for, max_relative_error, runner, unavailable

OP = "gaussian"
OP_NAME = "gaussian_readout"
SHAPE_NAMES = ("B", "C", "H", "W", "N")
MODES = ("fwd", "fwd+bwd")
SIZES = {
    "tiny": (3, 5, 4, 6, 7),
    "paper": (64, 48, 16, 16, 103),
    "sensorium": (128, 64, 36, 64, 8000),
    "large": (32, 128, 18, 32, 30000),
}
TOLERANCE = {"float32": 1e-4, "float64": 1e-10, "float16": 2e-2, "bfloat16": 5e-2}
NAMES = ("x", "grid", "features", "bias")


def make_inputs(shape: tuple, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """x (B,C,H,W) N(0,1), grid (B,N,2) U(-1,1), features (C,N) N(0,1/C), bias (N,) and grad_out (B,N) N(0,1)."""
    b, c, h, w, n = shape
    gen = torch.Generator().manual_seed(seed)

    def put(t):
        return t.to(device=device, dtype=dtype)

    return {"x": put(torch.randn(b, c, h, w, generator=gen)),
            "grid": put(torch.rand(b, n, 2, generator=gen) * 2 - 1),
            "features": put(torch.randn(c, n, generator=gen) / c ** 0.5),
            "bias": put(torch.randn(n, generator=gen)), "grad_out": put(torch.randn(b, n, generator=gen))}


def flops(shape: tuple, mode: str = "fwd") -> int:
    """Multiply-adds of the forward's taps, counted as FLOPs: ``2 * 4*B*C*N``."""
    b, c, h, w, n = shape
    return 8 * b * c * n


def reference_forward(x, grid, features, bias):
    """The neuralpredictors formulation: grid_sample, then the feature-weighted sum over channels."""
    b, n = grid.shape[:2]
    sampled = F.grid_sample(x, grid.view(b, n, 1, 2), align_corners=True)
    return (sampled.squeeze(-1) * features[None]).sum(1).view(b, n) + bias


def implementations(inputs: dict, mode: str, device: torch.device, compile: bool = True) -> list[Impl]:
    """Every implementation of the case (see the module docstring); unavailable backends as reported rows."""
    from daenr_fast import _dispatch, ops

    leaves = leaves_for(inputs, NAMES, mode)
    g = inputs["grad_out"]
    impls = [Impl("reference (grid_sample)", "reference", runner(reference_forward, leaves, g, mode))]
    if compile:
        impls.append(Impl("torch.compile(reference)", "compile", runner(compiled(reference_forward), leaves, g, mode)))
    else:
        impls.append(unavailable("torch.compile(reference)", "compile", "skipped (--no-compile or --quick)"))
    for backend in ops.OPS[OP_NAME].backends:
        ok, why = _dispatch.backend_status(OP_NAME, backend, device, inputs["x"].dtype)
        name = f"daenr:{backend}"
        if not ok:
            impls.append(unavailable(name, "backend", f"not available: {why}"))
            continue

        def forward(x, grid, features, bias, _backend=backend):
            return ops.gaussian_readout(x, grid, features, bias, backend=_backend)

        impls.append(Impl(name, "backend", runner(forward, leaves, g, mode)))
    b, c = inputs["x"].shape[:2]
    f = inputs["features"].detach()
    taps = torch.randn(4 * b, c, generator=torch.Generator().manual_seed(1)).to(f)
    impls.append(Impl("limit (1 GEMM)", "limit", lambda: torch.mm(taps, f), comparable=False,
                      note=f"mm ({4 * b},{c})x({c},{f.shape[1]})"))
    return impls


def compare(ref_out, out, inputs: dict) -> float:
    """Largest relative error over the output and every gradient."""
    return max_relative_error(ref_out, out)
