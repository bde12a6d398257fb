"""Poisson loss module with neuralpredictors' arguments and defaults, over :func:`daenr_fast.ops.poisson_loss`."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from daenr_fast.nn import _args
from daenr_fast.ops.poisson_loss import ACTIVATIONS, poisson_loss


class PoissonLoss(nn.Module):
    """Poisson negative log-likelihood ``act(output) - target * log(act(output) + bias)``, fused with its gradient.

    ``neuralpredictors.measures.PoissonLoss`` (main branch): same arguments, defaults and numbers. ``avg=True``
    averages over all elements, ``avg=False`` sums; ``per_neuron=True`` reduces over all leading dimensions only,
    one value per neuron (last dimension). ``full_loss=True`` adds the Stirling term of ``log(target!)`` (targets
    > 1), as ``torch.nn.PoissonNLLLoss(full=True)``. The target gets no gradient.

    Extra keywords: ``activation`` turns the model output into a rate first: ``"identity"`` (the output already is
    a rate, as in neuralpredictors), ``"elu1"``, ``"softplus"`` or ``"exp"`` (the output is a log-rate).
    ``validate=True`` runs :func:`~daenr_fast.ops.poisson_loss`'s checks (negative or non-finite targets, negative
    identity rates) and, as neuralpredictors main asserts, refuses a non-finite loss (all ``ValueError``; skipped
    under ``torch.compile`` and ``torch.func`` transforms); ``validate=False`` checks nothing, as the 0.3.0
    release. ``backend`` is passed to :func:`~daenr_fast.ops.poisson_loss`.

    neuralpredictors 0.3.0 (PyPI) differs from main, and so from this class, by ``bias=1e-12`` and no
    ``full_loss``. Its advice warning for ``avg=True`` is not repeated.

    Shapes: output, target (..., N) -> a scalar, or (N,) with ``per_neuron``.
    """

    def __init__(self, bias: float = 1e-8, per_neuron: bool = False, avg: bool = True, full_loss: bool = False, *,
                 activation: str = "identity", validate: bool = True, backend: str | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.bias = _args.real("bias", bias, minimum=0.0)
        self.per_neuron = _args.flag("per_neuron", per_neuron)
        self.avg = _args.flag("avg", avg)
        self.full_loss = _args.flag("full_loss", full_loss)
        self.activation = activation
        self.validate = _args.flag("validate", validate)
        self.backend = backend

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        loss = poisson_loss(output, target, activation=self.activation, eps=self.bias,
                            reduction="mean" if self.avg else "sum", per_neuron=self.per_neuron,
                            full=self.full_loss, validate=self.validate, backend=self.backend)
        if self.validate and not _transformed() and not bool(torch.isfinite(loss).all()):
            raise ValueError(f"the Poisson loss is not finite: every output must give a finite rate, with "
                             f"rate + bias > 0 where target > 0 "
                             f"(activation={self.activation!r}, bias={self.bias})")
        return loss

    def extra_repr(self) -> str:
        return (f"bias={self.bias}, per_neuron={self.per_neuron}, avg={self.avg}, full_loss={self.full_loss}, "
                f"activation={self.activation!r}")


def _transformed() -> bool:
    """Under torch.compile or a torch.func transform, where a data-dependent check cannot raise."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
