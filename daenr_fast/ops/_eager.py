"""Eager calls of the ops without the custom-op dispatcher.

Every op is a ``torch.library.custom_op``, so that ``torch.compile``, fake tensors and saved graphs see one opaque
node with a fake implementation and an autograd formula. In plain eager code that dispatcher costs tens of
microseconds per call (argument normalisation, the autograd wrapper, the dispatch itself), which is most of the
time of a small call on a GPU. :func:`eager_or_custom_op` builds a ``torch.autograd.Function`` from the op's own
implementation, ``setup_context`` and backward, so eager calls run the same code with less overhead, and calls the
custom op itself when :func:`tracing` says it must.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor


def tracing(*tensors: Optional[Tensor]) -> bool:
    """Whether this call runs under torch.compile, a dispatch mode (fake tensors, graph tracing), a torch.func
    transform or on tensor subclasses: then only the registered custom op is correct."""
    return (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0
            or torch._C._are_functorch_transforms_active()
            or torch.overrides.has_torch_function(tuple(t for t in tensors if t is not None)))


def eager_or_custom_op(op: Callable, name: str, forward: Callable, setup_context: Callable,
                       backward: Callable) -> Callable:
    """``call(*args)``: the custom ``op(*args)`` while :func:`tracing` its tensor arguments, else an autograd.Function
    named ``name`` running ``forward(*args)``, then ``setup_context(ctx, args, output)``, with
    ``backward(ctx, *grads)``: the same three functions the custom op registers.

    The Function's forward takes ``ctx`` itself (the older style) because a separate ``setup_context`` makes every
    call bind its arguments to the forward's signature with ``inspect``, which costs as much as the dispatcher it
    replaces.
    """
    def forward_with_context(ctx, *inputs):
        output = forward(*inputs)
        setup_context(ctx, inputs, output)
        return output

    function = type(name, (torch.autograd.Function,), {
        "__doc__": f"Eager autograd of {name} (see daenr_fast.ops._eager).",
        "forward": staticmethod(forward_with_context),
        "backward": staticmethod(backward),
    })

    def call(*args):
        if tracing(*(a for a in args if isinstance(a, Tensor))):
            return op(*args)
        return function.apply(*args)

    return call
