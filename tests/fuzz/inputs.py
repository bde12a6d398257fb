"""Inputs of the fuzz suite: backends to try, shapes, memory layouts and values with special entries.

A fuzzed tensor argument is a :class:`Arg`: the values of a *leaf* tensor and a :class:`Layout` that turns the
leaf into the op's input by a view (storage order permuted, dimensions sliced with a step, size-1 dimensions
expanded). The op and the float64 reference see the same view of the same values (the reference on a float64
copy of the leaf, which holds the rounded half/single values exactly), so their results and the gradients of
the two views are comparable. Values come from a seeded generator (fast for thousands of elements) in a
regime, a magnitude and an offset that hypothesis draws, plus up to a few special entries that hypothesis
places (zeros, the smallest normal and a subnormal of the dtype, the largest allowed magnitude, ones).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import settings, strategies as st

from daenr_fast import _dispatch
from daenr_fast.ops import OPS

#: Ops whose Triton kernels contract tiles with ``tl.dot``: under the interpreter (CPU tensors) a bfloat16
#: ``tl.dot`` runs as an integer matmul of the bit patterns (numpy has no bfloat16), so bfloat16 is fuzzed on GPUs
#: only for them.
INTERPRETED_DOT_OPS = ("factorized_readout", "vq_lookup")


def examples(share: float = 1.0) -> settings:
    """Settings for a test that runs ``share`` times the loaded profile's ``max_examples`` (at least 1)."""
    return settings(max_examples=max(1, round(settings.default.max_examples * share)))


def backend_params(op: str, interpreter: bool) -> list:
    """pytest params ``(device, backend)``: with ``interpreter``, Triton on CPU tensors (the interpreter, slow);
    without, every other backend of ``op`` on CPU tensors and, when a GPU is visible, on CUDA tensors. Triton
    cases carry the ``triton`` marker. Availability is decided per test (:func:`require`)."""
    if interpreter:
        pairs = [("cpu", "triton")]
    else:
        pairs = [("cpu", "torch"), ("cpu", "cpu")]
        if torch.cuda.is_available():
            pairs += [("cuda", b) for b in ("torch", "cuda", "triton")]
    return [pytest.param(torch.device(d), b, id=f"{d}-{b}", marks=[pytest.mark.triton] if b == "triton" else [])
            for d, b in pairs if b in OPS[op].backends]


def require(op: str, backend: str, device: torch.device) -> None:
    """Skip, with the dispatcher's reason, unless ``backend`` can run ``op`` on ``device`` here."""
    ok, why = _dispatch.backend_status(op, backend, device)
    if not ok:
        pytest.skip(f"{op}: backend {backend!r} is unavailable on {device.type}: {why}")


def interpreted(backend: str, device: torch.device) -> bool:
    """Whether the call runs Triton kernels in the interpreter (slow: tiny shapes only)."""
    return backend == "triton" and device.type == "cpu"


def fuzz_dtypes(op: str, backend: str, device: torch.device) -> list[torch.dtype]:
    """The dtypes ``backend`` takes for ``op`` (the registry's list), less what the interpreter cannot run."""
    dtypes = list(OPS[op].dtypes[backend])
    if interpreted(backend, device) and op in INTERPRETED_DOT_OPS:
        dtypes.remove(torch.bfloat16)
    return dtypes


def dims(hi: int) -> st.SearchStrategy[int]:
    """A dimension in [0, hi]: 0 and 1 each about one time in six, otherwise uniform in [2, hi]."""
    wide = st.integers(2, max(2, hi))
    return st.one_of(st.just(0), st.just(1), wide, wide, wide, wide)


def fit(shape: list[int], cap: int) -> list[int]:
    """``shape`` with its largest dimensions halved until it has at most ``cap`` elements (zeros and ones kept)."""
    shape = list(shape)
    while math.prod(shape) > cap:
        i = max(range(len(shape)), key=shape.__getitem__)
        shape[i] = max(2, shape[i] // 2) if shape[i] > 2 else 1
    return shape


# ------------------------------------------------------------------------------------------------------ layouts

@dataclass(frozen=True)
class Layout:
    """How a leaf becomes an input of a given shape: the leaf is stored in dimension order ``order``; dimension i
    is then sliced as ``start[i]::step[i]`` or, where ``broadcast[i]``, expanded from size 1."""

    order: tuple[int, ...]
    step: tuple[int, ...]
    start: tuple[int, ...]
    broadcast: tuple[bool, ...]

    @staticmethod
    def dense(ndim: int) -> "Layout":
        return Layout(tuple(range(ndim)), (1,) * ndim, (0,) * ndim, (False,) * ndim)

    def leaf_shape(self, shape) -> tuple[int, ...]:
        full = [1 if b else n * s + o for n, s, o, b in zip(shape, self.step, self.start, self.broadcast)]
        return tuple(full[i] for i in self.order)

    def strided(self, leaf: torch.Tensor) -> torch.Tensor:
        """The leaf permuted and sliced: the input before the expansion of its broadcast dimensions."""
        inverse = sorted(range(len(self.order)), key=self.order.__getitem__)
        cut = tuple(slice(None) if b else slice(o, None, s) for s, o, b in zip(self.step, self.start, self.broadcast))
        return leaf.permute(inverse)[cut]

    def view(self, leaf: torch.Tensor, shape) -> torch.Tensor:
        return self.strided(leaf).expand(tuple(shape))


@st.composite
def layouts(draw, ndim: int, broadcast: bool = True) -> Layout:
    """Contiguous about one time in three; otherwise a permuted storage order, steps of 2 or 3 (with a start
    offset) and, if ``broadcast``, expanded size-1 dimensions."""
    if ndim == 0 or draw(st.integers(0, 2)) == 0:
        return Layout.dense(ndim)
    order = tuple(draw(st.permutations(range(ndim))))
    bcast = tuple(draw(st.booleans()) and broadcast and draw(st.booleans()) for _ in range(ndim))
    step = tuple(1 if b else draw(st.sampled_from((1, 1, 2, 3))) for b in bcast)
    start = tuple(0 if s == 1 else draw(st.integers(0, s - 1)) for s in step)
    return Layout(order, step, start, bcast)


# ------------------------------------------------------------------------------------------------------- values

SPECIALS = ("zero", "negzero", "one", "minus_one", "tiny", "subnormal", "large", "minus_large")


@dataclass(frozen=True)
class Values:
    """Values of a leaf: ``offset + scale * base`` with base from ``kind`` (seeded): standard normal, uniform in
    [0, 1), integers in [-4, 4], ones, mostly zeros ("sparse"), or 10^[-4, 4] of either sign ("log"); then
    ``specials`` as (position in [0, 1) of the flattened leaf, name in :data:`SPECIALS`)."""

    kind: str
    scale: float
    offset: float
    seed: int
    specials: tuple[tuple[float, str], ...] = ()

    def raw(self, shape, dtype: torch.dtype, large: float) -> torch.Tensor:
        """The values in float64, the specials those of ``dtype``; ``large`` is the magnitude of the "large"
        specials."""
        g = torch.Generator().manual_seed(self.seed)
        f64 = torch.float64
        if self.kind == "normal":
            base = torch.randn(shape, generator=g, dtype=f64)
        elif self.kind == "uniform":
            base = torch.rand(shape, generator=g, dtype=f64)
        elif self.kind == "integers":
            base = torch.randint(-4, 5, shape, generator=g).to(f64)
        elif self.kind == "constant":
            base = torch.ones(shape, dtype=f64)
        elif self.kind == "log":  # eight decades, either sign
            sign = torch.randint(0, 2, shape, generator=g).to(f64) * 2 - 1
            base = sign * 10.0 ** (8 * torch.rand(shape, generator=g, dtype=f64) - 4)
        else:  # sparse: mostly exact zeros
            base = torch.randn(shape, generator=g, dtype=f64) * (torch.rand(shape, generator=g, dtype=f64) < 0.2)
        values = self.offset + self.scale * base
        flat = values.reshape(-1)
        info = torch.finfo(dtype)
        special = {"zero": 0.0, "negzero": -0.0, "one": 1.0, "minus_one": -1.0, "tiny": info.smallest_normal,
                   "subnormal": info.smallest_normal / 8, "large": large, "minus_large": -large}
        for where, name in self.specials:
            if flat.numel():
                flat[int(where * flat.numel())] = special[name]
        return values


def cast(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 ``values`` clamped to the finite range of ``dtype`` and rounded to it."""
    info = torch.finfo(dtype)
    return values.clamp(-info.max, info.max).to(dtype)


def values(kinds=("normal", "uniform", "integers", "constant", "sparse", "log"), log10_scale=(-3, 3), offsets=(0.0,),
           specials: bool = True) -> st.SearchStrategy[Values]:
    """:class:`Values` with a scale ``10**k`` for an integer k in ``log10_scale`` and an offset from ``offsets``."""
    placed = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(SPECIALS)), max_size=4)
    return st.builds(Values, kind=st.sampled_from(kinds),
                     scale=st.integers(*log10_scale).map(lambda k: 10.0 ** k),
                     offset=st.sampled_from(offsets), seed=st.integers(0, 2**31 - 1),
                     specials=placed.map(tuple) if specials else st.just(()))


@dataclass
class Arg:
    """A tensor argument: leaf values and the layout that makes the op's input of ``shape`` from them."""

    leaf: torch.Tensor
    layout: Layout
    shape: tuple[int, ...]

    @staticmethod
    def holding(values: torch.Tensor, layout: Layout, dtype: torch.dtype) -> "Arg":
        """An argument whose input is ``values`` (float64) cast to ``dtype``, stored as ``layout`` says; along
        broadcast dimensions the input repeats the values at index 0."""
        leaf = torch.zeros(layout.leaf_shape(values.shape), dtype=dtype)
        first = values[tuple(slice(0, 1) if b else slice(None) for b in layout.broadcast)]
        if values.numel():
            layout.strided(leaf).copy_(cast(first, dtype))
        return Arg(leaf, layout, tuple(values.shape))

    def view(self, requires_grad: bool, float64: bool = False, device: torch.device | None = None):
        """A fresh leaf (a float64 copy if ``float64``) and its view; the view keeps its gradient."""
        leaf = self.leaf.to(device=device, dtype=torch.float64 if float64 else self.leaf.dtype, copy=True)
        leaf.requires_grad_(requires_grad)
        view = self.layout.view(leaf, self.shape)
        if requires_grad:
            view.retain_grad()
        return view


def draw_layout(draw, shape, broadcast: bool = True) -> Layout:
    """A layout for ``shape`` (see :func:`layouts`) whose leaf has at most four times as many elements as the
    input (plus 64), else the dense one."""
    layout = draw(layouts(len(shape), broadcast))
    if math.prod(layout.leaf_shape(shape)) > 4 * math.prod(shape) + 64:
        return Layout.dense(len(shape))
    return layout


def draw_arg(draw, shape, dtype: torch.dtype, spec: Values, large: float, broadcast: bool = True,
             transform=None, specials_of: torch.dtype | None = None) -> Arg:
    """An :class:`Arg` of ``shape`` with a drawn layout, its leaf values from ``spec`` (the specials those of
    ``specials_of``, default ``dtype``); ``transform`` (float64 -> float64) maps them before the cast to ``dtype``."""
    shape = tuple(shape)
    layout = draw_layout(draw, shape, broadcast)
    raw = spec.raw(layout.leaf_shape(shape), specials_of or dtype, large)
    return Arg(cast(transform(raw) if transform is not None else raw, dtype), layout, shape)


# ------------------------------------------------------------------------------------------------------ running

def run(fn, args, needs, upstream, float64: bool = False, device: torch.device | None = None):
    """``fn(*views)`` on fresh views of ``args`` (None stays None) and, when some input needs a gradient, the
    backward of its last output with ``upstream``'s view. Returns (outputs, the gradient of each view or None)."""
    views = [None if a is None else a.view(n, float64, device) for a, n in zip(args, needs)]
    out = fn(*views)
    grads = [None] * len(args)
    if any(needs):
        (out[-1] if isinstance(out, tuple) else out).backward(upstream.view(False, float64, device))
        grads = [v.grad if n else None for v, n in zip(views, needs)]
    return out, grads


def assert_repeatable(first, second) -> None:
    """Two results of :func:`run` for one call hold bitwise the same outputs and gradients (NaNs in the same
    places): forward and backward are deterministic."""
    def tensors(result):
        out, grads = result
        return (list(out) if isinstance(out, tuple) else [out]) + list(grads)

    for a, b in zip(tensors(first), tensors(second)):
        if a is None or b is None:
            assert a is b
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True,
                                       msg=lambda m: f"a second run of the same call differs: {m}")
