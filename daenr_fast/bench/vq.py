"""Benchmark cases of the VQ lookup ``idx[m] = argmin_k ||z_m - e_k||^2`` (z (M,D), codebook e (K,D)), forward.

Implementations

* ``cdist+argmin`` - ``torch.cdist(z, e).argmin(1)`` (the M x K matrix);
* ``matmul+argmin`` - the expanded square ``|z|^2 - 2 z e^T + |e|^2`` then ``argmin`` (the M x K matrix);
* ``eager (chunked addmm+min)`` - the fastest eager formulation found: ``torch.addmm(|e|^2, z_blk, e^T,
  alpha=-2)`` and ``min`` over blocks of rows (at most 4M distances held), distance ``min + |z|^2``;
* ``torch.compile(matmul+argmin)``;
* ``daenr:<backend>`` - :func:`daenr_fast.ops.vq_lookup` on every available backend;
* ``limit (1 GEMM)`` - one ``torch.mm(z, e^T)``, the FLOPs ``2*M*K*D`` every method needs.

Correctness is judged by distance, not index: the exact (float64) squared distance of the chosen code must equal
the smallest one within tolerance, so near-ties may pick different codes.
"""
from __future__ import annotations

import torch

from daenr_fast.bench.cases import Impl, as_tuple, compiled, unavailable

OP = "vq"
OP_NAME = "vq_lookup"
SHAPE_NAMES = ("M", "K", "D")
MODES = ("fwd",)
SIZES = {
    "tiny": (17, 9, 5),
    "paper": (4096, 256, 32),
    "mid": (16384, 1024, 64),
    "large": (65536, 8192, 256),
}
TOLERANCE = {"float32": 1e-4, "float64": 1e-10, "float16": 2e-2, "bfloat16": 5e-2}
CHUNK_ELEMS = 1 << 22


def make_inputs(shape: tuple, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """z (M,D) and codebook (K,D), both N(0,1), with ``seed``."""
    m, k, d = shape
    gen = torch.Generator().manual_seed(seed)
    return {"z": torch.randn(m, d, generator=gen).to(device=device, dtype=dtype),
            "codebook": torch.randn(k, d, generator=gen).to(device=device, dtype=dtype)}


def flops(shape: tuple) -> int:
    """FLOPs of the distance GEMM, ``2*M*K*D``."""
    m, k, d = shape
    return 2 * m * k * d


def cdist_argmin(z, e):
    return torch.cdist(z, e).argmin(1)


def matmul_argmin(z, e):
    d = (z * z).sum(1, keepdim=True) - 2 * (z @ e.t()) + (e * e).sum(1)
    return d.argmin(1)


def chunked_addmm_min(z, e):
    """Blocks of rows: ``min_k (|e_k|^2 - 2 z e_k)`` with one addmm and one min each; adds ``|z|^2`` back."""
    e_sq, z_sq = (e * e).sum(1), (z * z).sum(1)
    rows = max(1, CHUNK_ELEMS // max(1, e.shape[0]))
    idx, dist = [], []
    for z_blk, zsq_blk in zip(z.split(rows), z_sq.split(rows)):
        val, arg = torch.addmm(e_sq, z_blk, e.t(), alpha=-2).min(1)
        idx.append(arg)
        dist.append(val + zsq_blk)
    return torch.cat(idx), torch.cat(dist)


def implementations(inputs: dict, mode: str, device: torch.device, compile: bool = True) -> list[Impl]:
    """Every implementation of the case (see the module docstring); unavailable backends as reported rows."""
    from daenr_fast import _dispatch, ops

    z, e = inputs["z"], inputs["codebook"]
    impls = [Impl("cdist+argmin", "reference", lambda: cdist_argmin(z, e)),
             Impl("matmul+argmin", "eager", lambda: matmul_argmin(z, e)),
             Impl("eager (chunked addmm+min)", "eager", lambda: chunked_addmm_min(z, e))]
    if compile:
        fn = compiled(matmul_argmin)
        impls.append(Impl("torch.compile(matmul+argmin)", "compile", lambda: fn(z, e)))
    else:
        impls.append(unavailable("torch.compile(matmul+argmin)", "compile", "skipped (--no-compile or --quick)"))
    op = ops.vq_lookup
    for backend in ops.OPS[OP_NAME].backends:
        name = f"daenr:{backend}"
        ok, why = _dispatch.backend_status(OP_NAME, backend, device, z.dtype)
        if not ok:
            impls.append(unavailable(name, "backend", f"not available: {why}"))
        else:
            impls.append(Impl(name, "backend", lambda _b=backend: op(z, e, backend=_b)))
    impls.append(Impl("limit (1 GEMM)", "limit", lambda: torch.mm(z, e.t()), comparable=False,
                      note=f"mm ({z.shape[0]},{z.shape[1]})x({z.shape[1]},{e.shape[0]})"))
    return impls


def chosen_distances(inputs: dict, idx: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """Exact float64 squared distance of every row of z to its chosen code."""
    z, e = inputs["z"].double(), inputs["codebook"].double()
    return torch.cat([((zb - e[ib]) ** 2).sum(1) for zb, ib in zip(z.split(chunk), idx.long().split(chunk))])


def compare(ref_out, out, inputs: dict) -> float:
    """Largest excess of the chosen code's exact distance over the reference's, relative to the distances' scale.

    The reference is any implementation (its choice is re-scored exactly); near-ties count as equal.
    """
    ref_d = chosen_distances(inputs, as_tuple(ref_out)[0])
    out_d = chosen_distances(inputs, as_tuple(out)[0])
    if ref_d.numel() == 0:
        return 0.0
    scale = max(ref_d.abs().max().item(), 1e-12)
    return (out_d - ref_d).abs().max().item() / scale
