"""Eager calls of the ops without the custom-op dispatcher.

Every op is a ``torch.library.custom_op``, so that ``torch.compile``, fake tensors and saved graphs see one opaque
node with a fake implementation and an autograd formula. In plain eager code that dispatcher costs tens of
microseconds per call (argument normalisation, the autograd wrapper, the dispatch itself), which is most of the
time of a small call on a GPU. :func:`eager_function` builds a ``torch.autograd.Function`` from the op's own
implementation, ``setup_context`` and backward, so eager calls run the same code with less overhead; :func:`tracing`
says when the custom op itself must be called instead.
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


def eager_function(name: str, forward: Callable, setup_context: Callable,
                   backward: Callable) -> type[torch.autograd.Function]:
    """An autograd.Function running ``forward(*inputs)``, then ``setup_context(ctx, inputs, output)``, with
    ``backward(ctx, *grads)``: the same three functions a custom op registers.

    The forward takes ``ctx`` itself (the older style) because a separate ``setup_context`` makes every call bind
    its arguments to the forward's signature with ``inspect``, which costs as much as the dispatcher it replaces.
    """
    def forward_with_context(ctx, *inputs):
        output = forward(*inputs)
        setup_context(ctx, inputs, output)
        return output

    return type(name, (torch.autograd.Function,), {
        "__doc__": f"Eager autograd of {name} (see daenr_fast.ops._eager).",
        "forward": staticmethod(forward_with_context),
        "backward": staticmethod(backward),
    })
