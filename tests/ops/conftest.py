"""What the op tests share: where each backend runs, the dtypes it takes, seeded inputs, the float64 reference
runner and the tolerance tables.

A test module names its op in a module constant ``OP`` and takes the fixtures it needs:

* ``backend`` (with ``device``, the device of its tensors): one case per backend this machine runs (see
  :func:`backend_devices`), marked ``triton`` for the Triton backend and ``cuda`` on CUDA tensors; a backend that
  cannot run here is skipped with the reason :func:`daenr_fast._dispatch.backend_status` gives
  (:func:`require_backend` says when that is a failure instead);
* ``dtype`` as well: one case per dtype that backend takes for the op (:func:`supported_dtypes`), narrowed by
  ``@pytest.mark.dtypes(...)``;
* ``triton_device`` alone: the device the Triton kernels run on here, for tests that call ``daenr_fast.kernels``
  directly.

Tests marked ``cuda`` need a GPU (sizes the CPU backends and the interpreter are too slow for, what the
interpreter cannot run): their ``backend`` is one of the GPU backends on CUDA tensors, skipped without a GPU.
The Triton interpreter itself is switched on by ``tests/conftest.py`` when no GPU is visible.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pytest
import torch
from torch import Tensor

from daenr_fast import _dispatch
from daenr_fast.ops import OPS, reference

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
GPU_BACKENDS = ("cuda", "triton")
EXPECT_COMPILED = "DAENR_FAST_EXPECT_COMPILED"


# ------------------------------------------------------------------------------------------- backends and dtypes

def interpreting() -> bool:
    """Whether the Triton kernels run under the interpreter (on CPU tensors) in this process."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def backend_devices() -> dict[str, torch.device]:
    """The backends the op tests run on this machine and the device of their tensors.

    Without CUDA: ``torch``, ``cpu`` and ``triton`` (under the interpreter), all on CPU tensors. With CUDA:
    ``torch`` and ``cpu`` on CPU tensors, ``cuda`` and ``triton`` (compiled) on CUDA tensors; a run with
    ``TRITON_INTERPRET=1`` puts ``triton`` on CPU tensors under the interpreter instead.
    """
    if not torch.cuda.is_available():
        return {"torch": CPU, "cpu": CPU, "triton": CPU}
    return {"torch": CPU, "cpu": CPU, "cuda": CUDA, "triton": CPU if interpreting() else CUDA}


def supported_dtypes(op: str, backend: str) -> tuple[torch.dtype, ...]:
    """The input dtypes ``backend`` takes for ``op``, from the op's definition."""
    return OPS[op].dtypes[backend]


#: (op, dtype) -> why the Triton interpreter cannot run that op in that dtype (the GPU runs it).
INTERPRETER_CANNOT = {
    (op, torch.bfloat16): "the Triton interpreter runs tl.dot on bfloat16 tiles as an integer matmul of their bit "
                          "patterns (numpy has no bfloat16); bfloat16 is tested on the GPU"
    for op in ("factorized_readout", "vq_lookup")
}

#: op -> (what a test measures, the most of it a case may have on the Triton interpreter, which runs every
#: program of the grid in Python). Measured on 2 CPU cores: a readout of 2.5e6 multiply-adds takes 2-3 s, the paper
#: size (8e7) 7-11 s; a Poisson loss of 1.5e5 elements 1.5 s, of 2e6 8 s; a VQ lookup of 4096 rows 1-9 s, of 3 rows
#: against 1500 codes full of exact ties 8 s, of 17 rows against 1024 codes 0.5 s.
INTERPRETER_BUDGET = {
    "factorized_readout": ("B*C*H*W*N", 1e7),
    "poisson_loss": ("elements", 2e5),
    "vq_lookup": ("max(M, K)", 1024),
}


def skip_if_slow_on_interpreter(op: str, device: torch.device, backend: str, size: float) -> None:
    """Skip a Triton case of ``size`` (in the unit of :data:`INTERPRETER_BUDGET`) that is too big for the
    interpreter; on a GPU the same case runs compiled."""
    unit, limit = INTERPRETER_BUDGET[op]
    if backend == "triton" and device.type == "cpu" and size > limit:
        pytest.skip(f"{unit} above {limit:g}: too slow for the Triton interpreter; the case runs compiled on a GPU")


def require_backend(op: str, backend: str, device: torch.device) -> None:
    """Skip the test when ``backend`` cannot run ``op`` on ``device`` here, with the reason; fail instead where
    that backend must be there: ``cpu`` when ``DAENR_FAST_EXPECT_COMPILED=1`` (CI asserts the compiled backend is
    in use) and the GPU backends on CUDA tensors (a GPU machine must run its kernels)."""
    ok, why = _dispatch.backend_status(op, backend, device)
    if ok:
        return
    message = f"{op}: backend {backend!r} is unavailable on {device.type} tensors: {why}"
    if backend == "cpu" and os.environ.get(EXPECT_COMPILED) == "1":
        pytest.fail(f"{message} ({EXPECT_COMPILED}=1)")
    if device.type == "cuda":
        pytest.fail(f"{message} (on a machine with a GPU)")
    pytest.skip(message)


def _marks(backend: str, device: torch.device) -> list:
    marks = [pytest.mark.triton] if backend == "triton" else []
    return marks + ([pytest.mark.cuda] if device.type == "cuda" else [])


def _targets(gpu_only: bool) -> list[tuple[str, torch.device, list]]:
    """(backend, device, marks) of every case of a test; ``gpu_only``: the GPU backends on CUDA tensors."""
    if not gpu_only:
        return [(name, device, _marks(name, device)) for name, device in backend_devices().items()]
    targets = []
    for name in GPU_BACKENDS:
        marks = _marks(name, CUDA)
        if not torch.cuda.is_available():
            marks.append(pytest.mark.skip(reason="needs a CUDA GPU"))
        elif name == "triton" and interpreting():
            marks.append(pytest.mark.skip(reason="TRITON_INTERPRET=1 in this process: the Triton cases on CUDA "
                                                 "tensors run in a pytest process without it"))
        targets.append((name, CUDA, marks))
    return targets


def _dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _parametrized_by_mark(metafunc, name: str) -> bool:
    return any(name in (mark.args[0] if isinstance(mark.args[0], (list, tuple)) else
                        [a.strip() for a in mark.args[0].split(",")])
               for mark in metafunc.definition.iter_markers("parametrize"))


def pytest_configure(config):
    config.addinivalue_line("markers", "dtypes(*dtypes): the dtypes a test that takes `dtype` runs (of those "
                                       "its backend takes)")


def pytest_generate_tests(metafunc):
    """The ``backend``/``device``/``dtype`` and ``triton_device`` cases; see the module docstring."""
    names = metafunc.fixturenames
    if "backend" in names and not _parametrized_by_mark(metafunc, "backend"):
        op = _module_op(metafunc)
        targets = _targets(gpu_only=metafunc.definition.get_closest_marker("cuda") is not None)
        if "dtype" not in names:
            metafunc.parametrize(("backend", "device"), [pytest.param(b, d, marks=m, id=b) for b, d, m in targets],
                                 indirect=["backend"])
            return
        wanted = metafunc.definition.get_closest_marker("dtypes")
        params = []
        for name, device, marks in targets:
            for dtype in supported_dtypes(op, name):
                if wanted is not None and dtype not in wanted.args:
                    continue
                why = INTERPRETER_CANNOT.get((op, dtype)) if name == "triton" and device.type == "cpu" else None
                params.append(pytest.param(name, device, dtype, id=f"{name}-{_dtype_id(dtype)}",
                                           marks=marks + ([pytest.mark.skip(reason=why)] if why else [])))
        metafunc.parametrize(("backend", "device", "dtype"), params, indirect=["backend"])
    elif "triton_device" in names:
        _module_op(metafunc)
        device = backend_devices()["triton"]
        metafunc.parametrize("triton_device", [pytest.param(device, marks=_marks("triton", device), id="triton")],
                             indirect=True)


def _module_op(metafunc) -> str:
    op = getattr(metafunc.module, "OP", None)
    if op not in OPS:
        raise pytest.UsageError(f"{metafunc.module.__name__} must name its op in OP (one of {sorted(OPS)}) to use "
                                f"the backend fixtures, got {op!r}")
    return op


@pytest.fixture
def backend(request, device) -> str:
    """The backend under test (see the module docstring); skipped when it cannot run here."""
    require_backend(request.module.OP, request.param, device)
    return request.param


@pytest.fixture
def triton_device(request) -> torch.device:
    """The device of the Triton kernels' tensors here; skipped when Triton cannot run on it."""
    require_backend(request.module.OP, "triton", request.param)
    return request.param


# ------------------------------------------------------------------------------------------------- input builders

def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: every input is drawn on the CPU, so a case has the same values on
    every device."""
    return torch.Generator().manual_seed(seed)


def readout_inputs(B: int, C: int, H: int, W: int, N: int, dtype: torch.dtype = torch.float32,
                   device: torch.device = CPU, bias: bool = True, seed: int = 0):
    """(x (B,C,H,W), spatial (N,H,W), features (N,C), bias (N,) or None): standard normal values drawn in float32
    from one generator, rounded to ``dtype``, on ``device``."""
    g = generator(seed)
    shapes = [(B, C, H, W), (N, H, W), (N, C)] + ([(N,)] if bias else [])
    tensors = [torch.randn(shape, generator=g).to(device=device, dtype=dtype) for shape in shapes]
    return tuple(tensors) if bias else (*tensors, None)


def poisson_inputs(shape: Sequence[int], activation: str, dtype: torch.dtype = torch.float32,
                   device: torch.device = CPU, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(z, counts) of ``shape``: z = 3 * N(0,1) in float64 (``|z| + 0.05`` for ``identity``, whose rate must be
    positive), counts drawn from Poisson(min(act(z), 50)); both rounded to ``dtype``, on ``device``."""
    g = generator(seed)
    z = torch.randn(tuple(shape), generator=g, dtype=torch.float64) * 3
    if activation == "identity":
        z = z.abs() + 0.05
    counts = torch.poisson(reference.poisson_rate(z, activation).clamp(max=50), generator=g)
    return z.to(device=device, dtype=dtype), counts.to(device=device, dtype=dtype)


def vq_inputs(M: int, K: int, D: int, dtype: torch.dtype = torch.float32, device: torch.device = CPU,
              seed: int = 0) -> tuple[Tensor, Tensor]:
    """(z (M,D), codebook (K,D)): standard normal values drawn in float32, rounded to ``dtype``, on ``device``.
    With many codes some rows have near-ties (two codes within float32 rounding of the expanded form)."""
    g = generator(seed)
    z, codebook = torch.randn(M, D, generator=g), torch.randn(K, D, generator=g)
    return z.to(device=device, dtype=dtype), codebook.to(device=device, dtype=dtype)


def vq_separated_inputs(M: int, K: int, D: int, dtype: torch.dtype = torch.float32, device: torch.device = CPU,
                        seed: int = 2) -> tuple[Tensor, Tensor]:
    """(z, codebook) with every row of z 0.3 * N(0,1) away from one of the codes 4 * N(0,1): the nearest code is
    unambiguous and stays so under small perturbations (for gradients and gradcheck)."""
    g = generator(seed)
    codebook = torch.randn(K, D, generator=g, dtype=torch.float64) * 4
    z = codebook[torch.randint(K, (M,), generator=g)] + 0.3 * torch.randn(M, D, generator=g, dtype=torch.float64)
    return z.to(device=device, dtype=dtype), codebook.to(device=device, dtype=dtype)


def vq_near_tie_inputs(M: int, K: int, D: int, dtype: torch.dtype = torch.float32, device: torch.device = CPU,
                       seed: int = 4) -> tuple[Tensor, Tensor]:
    """(z, codebook) where every code has a twin 1e-4 * N(0,1) away and every row of z lies 1e-2 * N(0,1) from
    one pair: the two distances differ by about 1e-6, below float32 rounding of the expanded form, so a backend
    may pick either twin (``K`` even)."""
    g = generator(seed)
    base = torch.randn(K // 2, D, generator=g, dtype=torch.float64)
    codebook = torch.stack([base, base + 1e-4 * torch.randn(base.shape, generator=g, dtype=torch.float64)], 1)
    z = base[torch.randint(K // 2, (M,), generator=g)] + 1e-2 * torch.randn(M, D, generator=g, dtype=torch.float64)
    return z.to(device=device, dtype=dtype), codebook.reshape(K, D).to(device=device, dtype=dtype)


def vq_exact_tie_inputs(repeats: int = 1, device: torch.device = CPU) -> tuple[Tensor, Tensor, list, Tensor]:
    """(z, codebook, indices, distances) with exact ties: codes 0 and 3 are equal, z[0] is as far from four codes
    as from code 0, z[2] is nearest to codes 1 and 1 + 5k; ``repeats`` copies of the 5 codes put the same ties in
    every block of the codebook. The right answer takes the lowest index."""
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0]]).repeat(repeats, 1)
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    return z.to(device), codebook.to(device), [0, 0, 1], torch.tensor([1.0, 1.0, 4.0], device=device)


# ------------------------------------------------------------------------------------------ the reference runner

UPSTREAM_SEED = 1


def upstream_gradient(shape: Sequence[int], kind: str = "normal", seed: int = UPSTREAM_SEED) -> Tensor:
    """The seeded upstream gradient of an output, float32 on the CPU: ``"normal"`` N(0,1), ``"positive"``
    0.5 + U[0,1) (a loss's scale), ``"ones"``."""
    if kind == "ones":
        return torch.ones(tuple(shape))
    g = generator(seed)
    if kind == "normal":
        return torch.randn(tuple(shape), generator=g)
    if kind == "positive":
        return torch.rand(tuple(shape), generator=g) + 0.5
    raise ValueError(f"kind must be 'normal', 'positive' or 'ones', got {kind!r}")


def run(fn: Callable[..., Tensor], inputs: Sequence[Optional[Tensor]], wrt: Optional[Sequence[int]] = None, *,
        upstream: str = "normal", seed: int = UPSTREAM_SEED, upstream_dtype: Optional[torch.dtype] = None):
    """(output, grads) of ``fn(*inputs)``: the output, detached, and the gradients of ``sum(output * g)`` with
    respect to the inputs at the positions ``wrt`` (default: every floating tensor), in input order: None at the
    other positions and for None inputs, zeros where nothing flowed back (an empty batch). ``g`` is
    :func:`upstream_gradient` of the output's shape, rounded to ``upstream_dtype`` (default: the output's dtype).
    """
    if wrt is None:
        wrt = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.is_floating_point()]
    leaves = [t.detach().clone().requires_grad_() if i in wrt and t is not None else t
              for i, t in enumerate(inputs)]
    output = fn(*leaves)
    g = upstream_gradient(output.shape, upstream, seed).to(upstream_dtype or output.dtype)
    output.backward(g.to(device=output.device, dtype=output.dtype))
    grads = [None if i not in wrt or t is None else (t.grad if t.grad is not None else torch.zeros_like(t))
             for i, t in enumerate(leaves)]
    return output.detach(), grads


def run_reference(fn: Callable[..., Tensor], inputs: Sequence[Optional[Tensor]],
                  wrt: Optional[Sequence[int]] = None, **kwargs):
    """:func:`run` of the reference ``fn`` on float64 copies of the floating inputs, with the upstream gradient
    rounded to the inputs' dtype first: the float64 truth of the same rounded values the backend sees."""
    dtype = next(t.dtype for t in inputs if isinstance(t, Tensor) and t.is_floating_point())
    wide = [t.double() if isinstance(t, Tensor) and t.is_floating_point() else t for t in inputs]
    if wrt is None:
        wrt = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.is_floating_point()]
    return run(fn, wide, wrt, upstream_dtype=kwargs.pop("upstream_dtype", dtype), **kwargs)


# --------------------------------------------------------------------------------------------------- tolerances

@dataclass(frozen=True)
class Tolerance:
    """How close a result must be to its float64 truth. Per element

        |got - want| <= rtol * |want| + atol + scaled_atol * max(1, max |want|)

    (the scaled term for sums of many terms, whose rounding grows with the largest value) and, when ``rel`` is
    set, ``max |got - want| <= rel * max |want|`` over the tensor. A tolerance with only ``rel`` has no
    per-element bound; one with nothing set asks for equality."""

    rtol: float = 0.0
    atol: float = 0.0
    scaled_atol: float = 0.0
    rel: Optional[float] = None


#: op -> dtype -> tolerance of every backend's forward and gradients against the float64 reference, for inputs
#: rounded to that dtype (the truth is computed from the same rounded values).
TOLERANCES: dict[str, dict[torch.dtype, Tolerance]] = {
    # float64: the same sums in another order. float32 (rel 1e-4, and per element 1e-4 relative plus 1e-5 of the
    # largest value): float32 products and accumulation (Triton: input_precision="ieee", no TF32) of up to ~1e5
    # terms per output. float16 (rel 2e-3): exact products, float32 accumulation, one rounding of the result
    # (2^-11 relative); Triton's grad x contracts gy*w (formed in float32) in 3xTF32. bfloat16 (rel 1.6e-2): as
    # float16 with bfloat16's rounding of the result (2^-8 relative).
    "factorized_readout": {
        torch.float64: Tolerance(rtol=1e-10, atol=1e-10),
        torch.float32: Tolerance(rtol=1e-4, scaled_atol=1e-5, rel=1e-4),
        torch.float16: Tolerance(rel=2e-3),
        torch.bfloat16: Tolerance(rel=1.6e-2),
    },
    # Per element, relative to max(1, max |truth|): float32 2e-5 (fast-math exp/log on the GPU, float32 partial
    # sums finished in double); float16 2e-3 and bfloat16 1.6e-2 (float32 math inside, one rounding of the
    # result). A float16 result whose truth is past 65504 must be the infinity that rounding the truth gives (as
    # torch's own float16 sums); see assert_close_to.
    "poisson_loss": {
        torch.float64: Tolerance(rtol=1e-10, scaled_atol=1e-10),
        torch.float32: Tolerance(rtol=2e-5, scaled_atol=2e-5),
        torch.float16: Tolerance(rtol=2e-3, scaled_atol=2e-3),
        torch.bfloat16: Tolerance(rtol=1.6e-2, scaled_atol=1.6e-2),
    },
    # The gradients of the distance (float32 distances for float16/bfloat16/float32 inputs); the chosen codes
    # and their distances are judged by vq_distance_tolerance.
    "vq_lookup": {
        torch.float64: Tolerance(rtol=1e-10, atol=1e-10),
        torch.float32: Tolerance(rtol=1e-4, atol=1e-4),
        torch.float16: Tolerance(rtol=1e-4, atol=1e-4),
        torch.bfloat16: Tolerance(rtol=1e-4, atol=1e-4),
    },
}

#: A float32 Poisson loss summed over many tiles (2e6 elements): the partial sums are finished in double, so the
#: total keeps float32 accuracy of the elements.
POISSON_SUM_TOL = Tolerance(rtol=1e-5, scaled_atol=1e-6)

#: float32 Poisson loss and gradient at extreme rates (z from -200 to 80): finite, and as accurate as elsewhere.
POISSON_EXTREMES_TOL = Tolerance(rtol=1e-5, atol=1e-5)

#: The torch backend in bfloat16 against the float32 reference of the unrounded inputs: bfloat16 rounding of the
#: inputs (2^-8 relative) over 48 x 256 terms, accumulated in float32.
READOUT_BFLOAT16_VS_FLOAT32 = Tolerance(rtol=3e-2, atol=0.5)

#: A chosen VQ code's distance may exceed the nearest one by VQ_DISTANCE_REL * (||z||^2 + max ||e||^2) +
#: VQ_DISTANCE_ABS: the float32 expanded form ||e||^2 - 2 z.e + ||z||^2 with float32 accumulation.
VQ_DISTANCE_REL, VQ_DISTANCE_ABS = 1e-5, 1e-6


def vq_distance_tolerance(z: Tensor, codebook: Tensor) -> Tensor:
    """Per row of z (M,), how far a chosen distance may be from the nearest one (see :data:`VQ_DISTANCE_REL`)."""
    z64, e64 = z.double(), codebook.double()
    return VQ_DISTANCE_REL * (z64.pow(2).sum(1) + e64.pow(2).sum(1).max()) + VQ_DISTANCE_ABS


def assert_close_to(got: Tensor, want: Tensor, tol: Tolerance, name: str = "output") -> None:
    """``got`` (any floating dtype, any device) against the float64 ``want`` within ``tol``. NaN must be NaN
    where the truth is NaN (the mean over no elements); where the finite truth rounds past the range of got's
    dtype (a float16 sum above 65504), got must be the infinity that rounding gives."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)}, want {tuple(want.shape)}"
    dtype = got.dtype
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    rounded = want.to(dtype).double()
    beyond = torch.isinf(rounded) & torch.isfinite(want)
    torch.testing.assert_close(got[beyond], rounded[beyond], rtol=0, atol=0, msg=lambda m: f"{name}: {m}")
    got, want = got[~beyond], want[~beyond]
    finite = want[torch.isfinite(want)]
    largest = finite.abs().max().item() if finite.numel() else 0.0
    if tol.rel is None or tol.rtol or tol.atol or tol.scaled_atol:
        torch.testing.assert_close(got, want, rtol=tol.rtol, atol=tol.atol + tol.scaled_atol * max(1.0, largest),
                                   equal_nan=True, msg=lambda m: f"{name}: {m}")
    if tol.rel is not None and finite.numel():
        error = (got - want)[torch.isfinite(want)].abs().max().item()
        assert error <= tol.rel * max(largest, 1e-30), \
            f"{name}: max |error| {error:.3g} is more than {tol.rel:g} of max |truth| {largest:.3g}"


def assert_all_close_to(names: Sequence[str], got: Sequence[Optional[Tensor]], want: Sequence[Optional[Tensor]],
                        tol: Tolerance, dtype: Optional[torch.dtype] = None) -> None:
    """:func:`assert_close_to` for each named pair; a None truth needs a None result. With ``dtype``, every
    result must have it."""
    assert len(got) == len(want) == len(names)
    for name, g, w in zip(names, got, want):
        if w is None:
            assert g is None, f"{name}: expected no gradient"
            continue
        assert g is not None, f"{name}: missing"
        if dtype is not None:
            assert g.dtype == dtype, f"{name}: dtype {g.dtype}, want {dtype}"
        assert_close_to(g, w, tol, name)
