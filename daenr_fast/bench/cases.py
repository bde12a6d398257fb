"""What a benchmark case and an implementation are, shared by the per-op modules.

An op module (:mod:`~daenr_fast.bench.readout`, :mod:`~daenr_fast.bench.poisson`, :mod:`~daenr_fast.bench.vq`)
defines

* ``OP`` (its name in the results), ``SIZES`` (size tier -> shape tuple), ``SHAPE_NAMES``, ``MODES``;
* ``make_inputs(shape, device, dtype, seed)`` -> dict of tensors;
* ``implementations(inputs, mode, device, compile)`` -> list of :class:`Impl`;
* ``compare(ref_out, out, inputs)`` -> largest error, relative to the reference's scale, and ``TOLERANCE``.

Every ``Impl.fn`` takes no argument, runs one call (forward, or forward and backward) and returns the tensors to
compare with the reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

#: kinds of implementation, in the order rows are printed
KINDS = ("reference", "eager", "compile", "backend", "limit")


@dataclass
class Impl:
    """One way of computing a case.

    ``kind`` is one of :data:`KINDS`; ``fn`` is None when ``available`` is False, and ``reason`` says why.
    ``comparable`` is False for the limit (a different computation of the same cost).
    """

    name: str
    kind: str
    fn: Optional[Callable[[], object]] = None
    available: bool = True
    reason: str = ""
    comparable: bool = True
    note: str = ""


def unavailable(name: str, kind: str, reason: str) -> Impl:
    """An :class:`Impl` row that is reported but not run."""
    return Impl(name=name, kind=kind, fn=None, available=False, reason=reason)


@dataclass
class Case:
    """One op at one size and mode."""

    op: str
    size: str
    shape: tuple
    shape_names: tuple
    mode: str
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    @property
    def shape_str(self) -> str:
        return ",".join(f"{k}={v}" for k, v in zip(self.shape_names, self.shape))


def as_tuple(out) -> tuple:
    """Outputs of an implementation as a tuple of tensors."""
    if isinstance(out, torch.Tensor):
        return (out,)
    return tuple(out)


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``max|out - ref| / max(max|ref|, 1e-12)``, computed in float64."""
    if ref.shape != out.shape:
        raise ValueError(f"shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    if ref.numel() == 0:
        return 0.0
    ref64, out64 = ref.detach().double(), out.detach().double()
    scale = max(ref64.abs().max().item(), 1e-12)
    return (out64 - ref64).abs().max().item() / scale


def max_relative_error(refs, outs) -> float:
    """Largest :func:`relative_error` over paired outputs."""
    refs, outs = as_tuple(refs), as_tuple(outs)
    if len(refs) != len(outs):
        raise ValueError(f"{len(outs)} outputs, the reference has {len(refs)}")
    return max((relative_error(r, o) for r, o in zip(refs, outs)), default=0.0)


def with_grads(forward: Callable[[], torch.Tensor], leaves: tuple, grad_out: Optional[torch.Tensor]):
    """A callable running ``forward`` and the gradients of its output for ``leaves`` (with ``grad_out``)."""

    def run():
        y = forward()
        grads = torch.autograd.grad(y, leaves, grad_out)
        return (y.detach(), *grads)

    return run


def leaves_for(inputs: dict, names: tuple, mode: str) -> tuple:
    """The inputs ``names`` of a case: as they are for ``"fwd"``, else fresh leaves that require gradients."""
    if mode == "fwd":
        return tuple(inputs[k] for k in names)
    return tuple(inputs[k].detach().clone().requires_grad_(True) for k in names)


def runner(forward: Callable, leaves: tuple, grad_out: Optional[torch.Tensor], mode: str) -> Callable:
    """A callable running ``forward(*leaves)``: without autograd for ``"fwd"``, else with every gradient."""
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return forward(*leaves)
        return run
    return with_grads(lambda: forward(*leaves), leaves, grad_out)


def compiled(fn: Callable, **kwargs) -> Callable:
    """``torch.compile(fn)``; compilation happens at the first call (the benchmark's warm-up)."""
    return torch.compile(fn, **kwargs)
