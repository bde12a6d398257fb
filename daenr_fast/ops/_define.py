"""One definition per op: from an :class:`OpDef`, everything the op needs to run everywhere.

An op file describes its op once — name, schema, one forward kernel per backend (and optionally one backward
kernel per backend), the dtypes each backend takes, a fake implementation, what ``setup_context`` saves, the
backward formula and a vmap rule — and :func:`define` turns that into

* the registered custom op ``torch.ops.daenr_fast.NAME`` (fake implementation, autograd, vmap rule), which is
  what ``torch.compile``, fake tensors, exported graphs and ``torch.library.opcheck`` see; a backward kernel
  becomes a second custom op ``daenr_fast::NAME_backward``;
  The custom op is the path under ``torch.compile``, dispatch modes and tensor subclasses;
* a ``torch.autograd.Function`` with ``setup_context`` and ``generate_vmap_rule`` whose forward calls that custom
  op: the path under ``torch.func`` transforms (``grad``, ``vmap``, ``jacrev``; a custom op's own autograd does not
  support them), whose ``vmap`` then reaches the op's own vmap rule;
* the fast eager path: a ``torch.autograd.Function`` built from the same three functions that calls the backend
  kernel directly, without the custom-op dispatcher (tens of microseconds per call, most of a small GPU call), and
  no autograd at all when no input needs a gradient;
* an entry in :data:`REGISTRY`, which dispatch, ``daenr info``, ``daenr build``, the benchmarks and the tests read.

The eager Function takes ``ctx`` in its forward (the older style) on purpose: a separate ``setup_context`` makes
every ``apply`` bind its arguments to the forward's signature with ``inspect``, which costs as much as the
dispatcher it replaces. Both Functions run the same forward kernel, ``setup_context`` and backward.

Arguments of every op are positional: the op's tensors and constants in schema order, then ``backend`` (a string)
last. ``setup_context(ctx, inputs, output)`` sees all of them; ``backward(ctx, *grads)`` returns one gradient per
input, ``None`` for the constants and the backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

BACKENDS = ("torch", "cpu", "cuda", "triton")

#: The dtypes of each backend under the library's precision policy (half types accumulate in float32; float64 only
#: where the hardware path is worth it): what every op takes unless its file says otherwise.
STANDARD_DTYPES: Mapping[str, tuple[torch.dtype, ...]] = {
    "torch": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
    "triton": (torch.float16, torch.bfloat16, torch.float32),
}


@dataclass(frozen=True)
class OpDef:
    """What an op file says about its op; see the module docstring.

    Attributes:
        name: op name, ``daenr_fast::NAME``; also the name of its C++ extension and of its ``csrc`` files.
        schema: the custom-op schema of the forward, ending in ``str backend``.
        kernels: backend -> forward kernel ``(*args without backend) -> outputs``.
        dtypes: backend -> the input dtypes that backend takes.
        fake: ``(*args without backend) -> outputs`` of the right shapes and dtypes, for fake tensors.
        setup_context: ``(ctx, inputs, output)``: saves what the backward needs.
        backward: ``(ctx, *grads) -> one gradient per input``.
        vmap: optional custom-op vmap rule ``(info, in_dims, *args) -> (output, out_dims)``; without one, vmap
            runs the op once per batch entry.
        backward_schema, backward_kernels, backward_fake: an optional backward kernel per backend, registered as
            the custom op ``NAME_backward`` so that compiled graphs see it; the backward calls it through
            :meth:`DefinedOp.run_backward`.
        backward_vmap: optional vmap rule of that backward op (the backward of a vmapped forward runs under vmap);
            without one, vmap runs it once per batch entry.
        extension: whether the ``cpu``/``cuda`` backends come from a compiled extension of this name.
    """

    name: str
    schema: str
    kernels: Mapping[str, Callable]
    dtypes: Mapping[str, tuple[torch.dtype, ...]]
    fake: Callable
    setup_context: Callable
    backward: Callable
    vmap: Optional[Callable] = None
    backward_schema: Optional[str] = None
    backward_kernels: Mapping[str, Callable] = field(default_factory=dict)
    backward_fake: Optional[Callable] = None
    backward_vmap: Optional[Callable] = None
    extension: bool = True

    def __post_init__(self):
        unknown = (set(self.kernels) | set(self.dtypes) | set(self.backward_kernels)) - set(BACKENDS)
        if unknown:
            raise ValueError(f"{self.name}: unknown backends {sorted(unknown)}; backends are {BACKENDS}")
        if set(self.kernels) != set(self.dtypes):
            raise ValueError(f"{self.name}: kernels and dtypes must name the same backends")
        if self.backward_kernels and set(self.backward_kernels) != set(self.kernels):
            raise ValueError(f"{self.name}: backward_kernels must name the same backends as kernels")


def gradients_like_first_input(kernel: Callable) -> Callable:
    """A backward kernel ``(grad, x, *rest) -> gradients`` whose gradients come back contiguous and in x's dtype,
    as fake implementations of backward ops promise."""
    def run(grad, x, *rest):
        return tuple(g.to(x.dtype).contiguous() for g in kernel(grad, x, *rest))

    return run


def tracing(*tensors: Optional[Tensor]) -> bool:
    """Whether a call must go through the registered custom op: under torch.compile, a dispatch mode (fake tensors,
    graph tracing), a torch.func transform, or on tensor subclasses."""
    return (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0
            or torch._C._are_functorch_transforms_active()
            or torch.overrides.has_torch_function(tuple(t for t in tensors if t is not None)))


class DefinedOp:
    """An op made by :func:`define`: call it with the op's positional arguments, backend last."""

    def __init__(self, spec: OpDef):
        self.spec = spec
        self.name = spec.name
        self.dtypes = dict(spec.dtypes)
        self.backends = tuple(b for b in BACKENDS if b in spec.kernels)
        self.custom_op = _custom_op(spec.name, spec.schema, spec.kernels, spec.fake)
        self.custom_op.register_autograd(spec.backward, setup_context=spec.setup_context)
        if spec.vmap is not None:
            self.custom_op.register_vmap(spec.vmap)
        self.overload = getattr(torch.ops.daenr_fast, spec.name).default  # what torch.compile can trace
        self.backward_overload = None
        if spec.backward_kernels:
            backward_op = _custom_op(f"{spec.name}_backward", spec.backward_schema, spec.backward_kernels,
                                     spec.backward_fake)
            if spec.backward_vmap is not None:
                backward_op.register_vmap(spec.backward_vmap)
            self.backward_overload = getattr(torch.ops.daenr_fast, f"{spec.name}_backward").default
        self._eager = _eager_function(spec)
        self._traced = _traced_function(spec, self.overload)

    def __call__(self, *args):
        tensors = [a for a in args if isinstance(a, Tensor)]
        if torch._C._are_functorch_transforms_active():
            return self._traced.apply(*args)
        if tracing(*tensors):
            return self.overload(*args)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return self._eager.apply(*args)
        return self.spec.kernels[args[-1]](*args[:-1])

    def run_backward(self, *args):
        """The backward kernel of ``args[-1]`` (the backend) on ``args[:-1]``; the custom op while tracing."""
        if tracing(*(a for a in args if isinstance(a, Tensor))):
            return self.backward_overload(*args)
        return self.spec.backward_kernels[args[-1]](*args[:-1])

    def __repr__(self) -> str:
        return f"DefinedOp({self.name!r}, backends={self.backends})"


#: op name -> :class:`DefinedOp`, filled as the op files are imported (``import daenr_fast.ops`` imports all).
REGISTRY: dict[str, DefinedOp] = {}


def define(spec: OpDef) -> DefinedOp:
    """Make the custom op, its autograd, vmap rule and eager path from ``spec``, and register it."""
    if spec.name in REGISTRY:
        raise ValueError(f"op {spec.name!r} is defined twice")
    op = DefinedOp(spec)
    REGISTRY[spec.name] = op
    return op


def _custom_op(name: str, schema: str, kernels: Mapping[str, Callable], fake: Callable):
    def impl(*args):
        return kernels[args[-1]](*args[:-1])

    op = torch.library.custom_op(f"daenr_fast::{name}", impl, mutates_args=(), schema=schema)
    op.register_fake(lambda *args: fake(*args[:-1]))
    return op


def _eager_function(spec: OpDef) -> type:
    def forward(ctx, *args):
        output = spec.kernels[args[-1]](*args[:-1])
        spec.setup_context(ctx, args, output)
        return output

    return type(f"{_camel(spec.name)}Eager", (torch.autograd.Function,), {
        "__doc__": f"Eager autograd of {spec.name} (see daenr_fast.ops._define).",
        "forward": staticmethod(forward),
        "backward": staticmethod(spec.backward),
    })


def _traced_function(spec: OpDef, overload) -> type:
    def forward(*args):
        return overload(*args)

    return type(f"{_camel(spec.name)}Function", (torch.autograd.Function,), {
        "__doc__": f"Autograd of {spec.name} under torch.func transforms (see daenr_fast.ops._define).",
        "generate_vmap_rule": True,
        "forward": staticmethod(forward),
        "setup_context": staticmethod(spec.setup_context),
        "backward": staticmethod(spec.backward),
    })


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))
