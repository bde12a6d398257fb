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
  (read z and s, write dz: ``12*B*N`` bytes), so ``1 / x_limit`` is the fraction of copy bandwidth a row reaches
  (the ``16M`` tier, 2^24 elements, is large enough for a GPU to run at full bandwidth).

Host overhead (:func:`host_overhead`; :func:`main` prints and saves it), measured apart from the cases: the
host time of one eager call at the paper size, forward alone (no autograd) and forward with backward, with and
without the target validation (which reads two numbers back, a synchronization with the device), from
``time.perf_counter`` around many back-to-back calls with no synchronization inside a sample (on a GPU the
kernels of a 64x103 call take a few microseconds, so the host's time per call is what limits it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

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
    "16M": (2048, 8192),
}
HOST_SIZE = "paper"
HOST_MODES = ("fwd", "fwd+bwd")
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


def _host_calls(device: torch.device, dtype: torch.dtype) -> dict:
    """name -> (mode -> callable of one eager call) for the host-overhead measurement at :data:`HOST_SIZE`."""
    from daenr_fast import _dispatch, ops

    inputs = make_inputs(SIZES[HOST_SIZE], device, dtype)
    s = inputs["target"]
    z = inputs["z"].detach().clone().requires_grad_(True)

    def modes(forward):
        def fwd():
            with torch.no_grad():
                return forward(inputs["z"], s)

        def fwd_bwd():
            return torch.autograd.grad(forward(z, s), (z,))

        return {"fwd": fwd, "fwd+bwd": fwd_bwd}

    calls = {"reference": modes(reference_forward), "eager (analytic grad)": modes(eager_forward)}
    for backend in ops.OPS[OP_NAME].backends:
        if not _dispatch.backend_status(OP_NAME, backend, device, dtype)[0]:
            continue
        for validate in (True, False):  # validation reads two numbers back from the device: a synchronization
            calls[f"daenr:{backend}" + ("" if validate else " (validate=False)")] = modes(
                lambda zz, ss, _b=backend, _v=validate: ops.poisson_loss(zz, ss, activation=ACTIVATION, eps=EPS,
                                                                         validate=_v, backend=_b))
    return calls


def host_overhead(device: str = "cpu", dtype: str = "float32", calls: int = 500, repeats: int = 7) -> dict:
    """Host microseconds per eager call at :data:`HOST_SIZE` for every implementation and mode of
    :data:`HOST_MODES`: the median over ``repeats`` samples of ``calls`` back-to-back calls each, timed with
    ``time.perf_counter`` and no synchronization inside a sample (the device is synchronized between samples).
    On CPU tensors the time includes the computation itself."""
    if calls < 1 or repeats < 1:
        raise ValueError(f"calls and repeats must be at least 1, got {calls} and {repeats}")
    dev, dt = torch.device(device), getattr(torch, dtype)
    rows = []
    for name, modes in _host_calls(dev, dt).items():
        for mode, fn in modes.items():
            for _ in range(3):  # warm-up: extension loads, compiles, allocator
                fn()
            samples = []
            for _ in range(repeats):
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples.append((time.perf_counter() - t0) / calls * 1e6)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            rows.append(dict(impl=name, mode=mode, host_us=statistics.median(samples), min_us=min(samples),
                             max_us=max(samples), calls=calls, repeats=repeats))
    return dict(op=OP_NAME, shape=dict(zip(SHAPE_NAMES, SIZES[HOST_SIZE])), device=device, dtype=dtype,
                torch=torch.__version__, threads=torch.get_num_threads(), rows=rows)


def main(argv=None) -> int:
    """Print (and with ``--out``, save as JSON) the host overhead per eager call; ``argv`` as for
    ``python -c "from daenr_fast.bench import poisson; poisson.main()" --device cuda --out host.json``."""
    parser = argparse.ArgumentParser(prog="poisson host overhead", description="Host time per eager call.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args(argv)
    result = host_overhead(args.device, args.dtype, args.calls, args.repeats)
    print(f"host overhead per eager call, {OP_NAME} at {result['shape']}, {args.device} {args.dtype}:")
    for row in result["rows"]:
        print(f"  {row['impl']:30s} {row['mode']:8s} {row['host_us']:9.1f} us  (min {row['min_us']:.1f})")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0
