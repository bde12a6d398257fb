"""Poisson loss module with neuralpredictors' argument names, over :func:`daenr_fast.ops.poisson_loss`."""
from __future__ import annotations

from torch import Tensor, nn

from daenr_fast.ops.poisson_loss import ACTIVATIONS, poisson_loss


class PoissonLoss(nn.Module):
    """Poisson negative log-likelihood ``act(output) - target * log(act(output) + bias)``, fused with its gradient.

    Same arguments and semantics as ``neuralpredictors.measures.PoissonLoss`` (``bias`` is the ``eps`` added to
    the rate inside the log): with ``avg=False`` the loss is summed, with ``avg=True`` averaged; with
    ``per_neuron=True`` it is reduced over all leading dimensions only, one value per neuron (last dimension).
    ``full_loss=True`` adds the Stirling term of ``log(target!)``. ``activation`` turns the model output into a
    rate first: ``"identity"`` (the output already is a rate), ``"elu1"``, ``"softplus"`` or ``"exp"`` (the output
    is a log-rate). The target gets no gradient. ``validate`` and ``backend`` are passed to
    :func:`~daenr_fast.ops.poisson_loss` (target check, backend choice).

    Shapes: output, target (..., N) -> a scalar, or (N,) with ``per_neuron``.
    """

    def __init__(self, bias: float = 1e-8, per_neuron: bool = False, avg: bool = False, full_loss: bool = False,
                 activation: str = "identity", validate: bool = True, backend: str | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.bias = bias
        self.per_neuron = per_neuron
        self.avg = avg
        self.full_loss = full_loss
        self.activation = activation
        self.validate = validate
        self.backend = backend

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return poisson_loss(output, target, activation=self.activation, eps=self.bias,
                            reduction="mean" if self.avg else "sum", per_neuron=self.per_neuron,
                            full=self.full_loss, validate=self.validate, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"bias={self.bias}, per_neuron={self.per_neuron}, avg={self.avg}, full_loss={self.full_loss}, "
                f"activation={self.activation!r}")
