"""Fused Poisson loss: the op definition, its public function and its backends.

With the rate ``r = act(z)`` and counts ``s = target``, per element

    l = r - s * log(r + eps)                 dl/dz = act'(z) * (1 - s / (r + eps))
    l = exp(z) - s * z      (act = exp)      dl/dz = exp(z) - s

act is ``identity``, ``elu1`` (ELU + 1), ``softplus`` or ``exp`` (then z is the log-rate and eps is unused).
``full=True`` adds the Stirling term of ``log(s!)`` (for s > 1) as ``torch.nn.PoissonNLLLoss(full=True)``.
z, target (..., N); ``reduction`` ``"mean"``/``"sum"`` over all elements (a scalar) or ``"none"`` (z's shape);
``per_neuron=True`` reduces over the leading dimensions only, giving (N,).

The fused backends make a single pass over (z, target): loss, its reduction, the gradient for z (already
divided by the reduced count) and the validity check of the targets. The backward only multiplies that saved
gradient by the upstream gradient (in place when the graph is not retained). For float16/bfloat16 inputs the saved
gradient is float32 and is rounded once, after that product. A backward that builds a graph
(``create_graph=True``, second derivatives) recomputes dl/dz from the saved z and target with differentiable torch
operations instead. vmap over a leading model dimension reduces each model's loss separately in one fused call.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from daenr_fast import _build, _dispatch, _validate
from daenr_fast.ops import reference
from daenr_fast.ops._define import STANDARD_DTYPES, OpDef, define, tracing
from daenr_fast.ops.poisson_codes import ACTIVATION_NAMES, PoissonMode

ACTIVATIONS = ACTIVATION_NAMES
REDUCTIONS = ("mean", "sum", "none")


def poisson_loss(z: Tensor, target: Tensor, *, activation: str = "identity", eps: float = 1e-8,
                 reduction: str = "mean", per_neuron: bool = False, full: bool = False, validate: bool = True,
                 backend: Optional[str] = None) -> Tensor:
    """Poisson negative log-likelihood of ``target`` under the rate ``act(z)``, fused with its gradient.

    Args:
        z: model output (..., N), floating; the rate is ``act(z)``.
        target: observed counts or rates >= 0, z's shape (any real dtype; converted to z's dtype). No gradient.
        activation: ``"identity"``, ``"elu1"``, ``"softplus"`` or ``"exp"``.
        eps: added to the rate inside the log.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        per_neuron: reduce over the leading dimensions only (``"mean"`` or ``"sum"``), giving (N,).
        full: add the Stirling approximation of ``log(target!)``.
        validate: raise ``ValueError`` on negative or non-finite targets (checked inside the fused pass) and, for
            ``activation="identity"``, on negative rates z (one extra read of z); skipped while tracing with
            ``torch.compile`` and under ``vmap``, which cannot raise on data.
        backend: ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; None chooses (see :mod:`daenr_fast._dispatch`).

    Returns:
        The loss in z's dtype: a scalar, (N,) with ``per_neuron``, or z's shape with ``reduction="none"``.
    """
    code, mode, mean = _check_options(activation, reduction, per_neuron, eps)
    _validate.check_tensor_any_rank(z, "z", "(..., N)")
    if eps > torch.finfo(z.dtype).max:
        raise ValueError(f"eps must be representable in z's dtype {z.dtype} (at most {torch.finfo(z.dtype).max:.4g}), "
                         f"got {eps!r}")
    target = _check_target(target, z)
    if per_neuron and z.dim() == 0:
        raise ValueError("z must have at least one dimension (..., N) when per_neuron=True")
    chosen = _dispatch.resolve_backend(OP.name, backend, z.device, z.dtype, work=z.numel())
    need_grad = torch.is_grad_enabled() and (z.requires_grad or (not torch.compiler.is_compiling()
                                                                 and _requires_grad(z)))
    loss, _, bad = OP(z.contiguous(), target.contiguous(), code, float(eps), mode, mean, bool(full), need_grad,
                      chosen)
    if validate and not torch.compiler.is_compiling() and not _batched(bad):
        _raise_if_invalid(bad, target)
        if activation == "identity":
            _raise_if_negative_rate(z)
    return loss


def _requires_grad(t: Tensor) -> bool:
    """Whether autograd can ask for dl/dt: t or a tensor it wraps requires a gradient. Under ``vmap`` the batched
    view reads ``requires_grad=False`` even when the tensor it batches (which autograd sees) requires one. Eager
    only (compiled graphs read ``t.requires_grad``)."""
    functorch = torch._C._functorch
    while not t.requires_grad:
        if not functorch.is_functorch_wrapped_tensor(t):
            return False
        t = functorch.get_unwrapped(t)
    return True


def _batched(t: Tensor) -> bool:
    """Whether ``t`` is (or wraps) a vmap batch, whose values cannot be read (validation is then skipped, as when
    compiling)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        if functorch.is_batchedtensor(t):
            return True
        t = functorch.get_unwrapped(t)
    return False


def _check_options(activation, reduction, per_neuron, eps) -> tuple[int, int, bool]:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if per_neuron and reduction == "none":
        raise ValueError("per_neuron=True needs reduction 'mean' or 'sum', got 'none'")
    if not isinstance(eps, (int, float)) or not eps >= 0 or eps == float("inf"):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    mode = PoissonMode.PER_NEURON if per_neuron else (PoissonMode.NONE if reduction == "none" else PoissonMode.TOTAL)
    return ACTIVATIONS.index(activation), int(mode), reduction == "mean"


def _check_target(target, z: Tensor) -> Tensor:
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of z's shape {tuple(z.shape)}, got {type(target).__name__}")
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold real counts or rates, got {target.dtype}")
    if target.shape != z.shape:
        raise ValueError(f"target must have z's shape {tuple(z.shape)}, got {tuple(target.shape)}")
    if target.device != z.device:
        raise ValueError(f"target is on {target.device} but z is on {z.device}; they must match")
    return target.detach().to(z.dtype)


def _raise_if_invalid(bad: Tensor, target: Tensor) -> None:
    count, first = (int(v) for v in bad.tolist())
    if count:
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(first), target.shape))
        value = target.reshape(-1)[first].item()
        raise ValueError(f"target must hold counts or rates >= 0 (a Poisson likelihood): {count} negative or "
                         f"non-finite entr{'y' if count == 1 else 'ies'}, the first at index {where} "
                         f"(value {value})")


def _raise_if_negative_rate(z: Tensor) -> None:
    negative = z.detach().reshape(-1) < 0
    count = int(negative.sum())
    if count:
        first = int(negative.nonzero()[0, 0])
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(first), z.shape))
        raise ValueError(f"z must hold rates >= 0 with activation='identity': {count} negative "
                         f"entr{'y' if count == 1 else 'ies'}, the first at index {where} (value "
                         f"{z.reshape(-1)[first].item()}); use activation='elu1', 'softplus' or 'exp' for "
                         f"unconstrained outputs")


# ----------------------------------------------------------------------------------------------- backends

def _invalid_info(target: Tensor) -> Tensor:
    bad = ~((target >= 0) & (target <= torch.finfo(target.dtype).max))
    flat = bad.reshape(-1).nonzero()
    first = flat[0, 0] if flat.numel() else torch.tensor(-1, device=target.device)
    return torch.stack([bad.sum(), first.to(bad.device)]).to(torch.int64)


def _torch_grad(z: Tensor, target: Tensor, activation: str, eps: float, scale: float) -> Tensor:
    """``scale * dl/dz`` per element, from the closed form in the module docstring."""
    acc = torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype
    z, s = z.to(acc), target.to(acc)
    if activation == "exp":
        grad = torch.exp(z) - s
    else:
        if activation == "identity":
            slope = torch.ones_like(z)
        elif activation == "elu1":
            slope = torch.where(z > 0, torch.ones_like(z), torch.exp(torch.where(z > 0, torch.zeros_like(z), z)))
        else:
            slope = torch.where(z > 20, torch.ones_like(z), torch.sigmoid(z))
        grad = slope * (1 - s / (reference.poisson_rate(z, activation) + eps))
    return grad * scale


def _grad_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the saved gradient: float32 for float16/bfloat16 (it is rounded once, after the upstream scale)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _grad_scale(z: Tensor, mode: int, mean: bool) -> float:
    """1 / (number of reduced elements) for a mean, else 1."""
    if not mean or mode == PoissonMode.NONE:
        return 1.0
    count = z.numel() if mode == PoissonMode.TOTAL else (z.numel() // z.shape[-1] if z.shape[-1] else 0)
    return 1.0 / count if count else float("nan")


def _torch_forward(z, target, code, eps, mode, mean, full, need_grad):
    activation = ACTIVATIONS[code]
    reduction = "none" if mode == PoissonMode.NONE else ("mean" if mean else "sum")
    loss = reference.poisson_loss(z, target, activation, eps, reduction, mode == PoissonMode.PER_NEURON, full)
    if need_grad:
        grad = _torch_grad(z, target, activation, eps, _grad_scale(z, mode, mean)).to(_grad_dtype(z.dtype))
    else:
        grad = z.new_empty((0,), dtype=_grad_dtype(z.dtype))
    return loss, grad, _invalid_info(target)


def _ext_forward(z, target, code, eps, mode, mean, full, need_grad):
    _build.load_extension(OP.name)  # a no-op once loaded; needed when the op is called directly (e.g. a saved graph)
    return torch.ops.daenr_fast_ext.poisson_loss_forward(z, target, code, eps, mode, mean, full, need_grad)


def _triton_forward(z, target, code, eps, mode, mean, full, need_grad):
    from daenr_fast.kernels import poisson_loss as kernel

    return kernel.forward(z, target, code, eps, mode, mean, full, need_grad)


# ----------------------------------------------------------------------------------------------- autograd

def _fake(z, target, activation, eps, mode, mean, full, need_grad):
    if mode == PoissonMode.NONE:
        loss = torch.empty_like(z)
    else:
        loss = z.new_empty(() if mode == PoissonMode.TOTAL else (z.shape[-1],))
    grad_dtype = _grad_dtype(z.dtype)
    grad = torch.empty_like(z, dtype=grad_dtype) if need_grad else z.new_empty((0,), dtype=grad_dtype)
    return loss, grad, z.new_empty((2,), dtype=torch.int64)


def _setup_context(ctx, inputs, output):
    z, target, activation, eps, mode, mean, *_ = inputs
    _, grad, bad = output
    ctx.mark_non_differentiable(grad, bad)
    ctx.set_materialize_grads(False)  # else autograd fills a z-sized zero gradient for the unused `grad` output
    ctx.save_for_backward(grad, z, target)
    ctx.options = (ACTIVATIONS[activation], eps, _grad_scale(z, mode, mean))


def _backward(ctx, grad_loss, _grad_grad, _grad_bad):
    if grad_loss is None:
        return (None,) * 9
    grad, z, target = ctx.saved_tensors
    if torch.is_grad_enabled():  # building a graph of the gradient: recompute dl/dz differentiably
        grad_z = _torch_grad(z, target, *ctx.options) * grad_loss
    else:
        grad_z = _scale_saved_grad(grad, grad_loss)
    return grad_z.to(z.dtype), None, None, None, None, None, None, None, None


def _scale_saved_grad(grad: Tensor, grad_loss: Tensor) -> Tensor:
    """``grad * grad_loss``. When the graph is freed after this backward (eager, no ``retain_graph``), nothing else
    can see the saved gradient: it is scaled in place, or returned as it is for a unit scalar on CPU."""
    if tracing(grad, grad_loss) or _keeps_graph():
        return grad * grad_loss
    if grad_loss.numel() == 1 and grad_loss.device.type == "cpu" and grad_loss.item() == 1.0:
        return grad
    return grad.mul_(grad_loss)


def _keeps_graph() -> bool:
    """Whether the running backward keeps the graph (True when that cannot be asked)."""
    query = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if query is None else bool(query())


# ----------------------------------------------------------------------------------------------- vmap

def _vmap(info, in_dims, z, target, activation, eps, mode, mean, full, need_grad, backend):
    """Models stacked on a leading dimension G: each model's loss in one fused call. With z (G, ..., N): a total
    becomes the per-neuron mode over the (elements, G) view, per-neuron the per-neuron mode over (rows, G*N)."""
    size = info.batch_size
    z, target = (t.movedim(d, 0) if d is not None else t.expand(size, *t.shape)
                 for t, d in zip((z, target), in_dims[:2]))
    info_out = _invalid_info_per_model(target)
    if mode == PoissonMode.NONE:
        loss, grad, _ = OP.custom_op(z.contiguous(), target.contiguous(), activation, eps, mode, mean, full,
                                     need_grad, backend)
        return (loss, grad, info_out), (0, 0 if need_grad else None, 0)
    shape = z.shape
    if mode == PoissonMode.TOTAL:
        def view_in(t):  # (elements, G)
            return t.reshape(size, -1).t()

        def view_out(t):
            return t.t().reshape(shape)
    else:
        def view_in(t):  # (rows, G*N)
            return t.movedim(0, -2).reshape(-1, size * shape[-1])

        def view_out(t):
            return t.reshape(*shape[1:-1], size, shape[-1]).movedim(-2, 0)
    loss, grad, _ = OP.custom_op(view_in(z).contiguous(), view_in(target).contiguous(), activation, eps,
                                 int(PoissonMode.PER_NEURON), mean, full, need_grad, backend)
    loss = loss.view(size, *(() if mode == PoissonMode.TOTAL else (shape[-1],)))
    grad = view_out(grad) if need_grad else grad
    return (loss, grad, info_out), (0, 0 if need_grad else None, 0)


def _invalid_info_per_model(target: Tensor) -> Tensor:
    """(G, 2) int64: per model, the count of invalid targets and the first one's flat index (or -1)."""
    bad = ~((target >= 0) & (target <= torch.finfo(target.dtype).max))
    flat = bad.reshape(bad.shape[0], -1)
    first = torch.where(flat.any(1), flat.to(torch.int8).argmax(1), torch.full_like(flat[:, 0], -1, dtype=torch.int64))
    return torch.stack([flat.sum(1), first], dim=1).to(torch.int64)


OP = define(OpDef(
    name="poisson_loss",
    schema="(Tensor z, Tensor target, int activation, float eps, int mode, bool mean, bool full, bool need_grad,"
           " str backend) -> (Tensor, Tensor, Tensor)",
    kernels={"torch": _torch_forward, "cpu": _ext_forward, "cuda": _ext_forward, "triton": _triton_forward},
    dtypes=STANDARD_DTYPES,
    fake=_fake,
    setup_context=_setup_context,
    backward=_backward,
    vmap=_vmap,
))
