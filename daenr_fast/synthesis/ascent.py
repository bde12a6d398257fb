"""The optimisation loop shared by both methods: :func:`ascend`.

B images are optimised at once, image b for neuron ``neuron[b]``; each image's loss depends on its own image
only (the model is in eval mode, so batch norm uses its running statistics), so the batch is B independent
problems::

    for t in 1..steps:
        x = to_image(param)                         (B,1,S,S)
        z = response(x)[b, neuron[b]]               (B,)
        L = sum_b objective.loss(z_b, act(z_b))
        update(param, dL/dparam)                    (the method's step and constraint)

Every image visited (all satisfy the method's constraint) is scored; each b keeps its best-scoring one, so a
step that overshoots never loses a better earlier image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from daenr_fast.models.readouts import activate
from daenr_fast.synthesis.objective import Objective


@dataclass
class AscentResult:
    """The best image (B,1,S,S) of each b, its predicted rate (B,) for its own neuron, and the rate at the start."""

    images: Tensor
    rate: Tensor
    initial_rate: Tensor


def own_rate(run, x: Tensor, neuron: Tensor) -> tuple:
    """(z, rate) of each image's own neuron, both (B,)."""
    z = run.response(x).gather(1, neuron[:, None]).squeeze(1)
    return z, activate(z, run.activation)


def ascend(run, param: Tensor, to_image: Callable[[Tensor], Tensor], neuron: Tensor, objective: Objective,
           steps: int, update: Callable[[Tensor], None], on_step: Optional[Callable[[], None]] = None
           ) -> AscentResult:
    """Run ``steps`` updates of the leaf tensor ``param`` (see the module docstring).

    Args:
        run: a :class:`~daenr_fast.synthesis.run.SynthesisRun`.
        param: (B, ...) leaf tensor with ``requires_grad``; changed in place by ``update``.
        to_image: param -> images (B,1,S,S), differentiable.
        neuron: (B,) int64 neuron index of each image.
        update: called with ``param`` after each backward pass (``param.grad`` is set), under ``no_grad``.
        on_step: called after each step (progress).
    """
    best_images, best_rate, initial = None, None, None
    for step in range(steps + 1):
        param.grad = None
        x = to_image(param)
        z, rate = own_rate(run, x, neuron)
        with torch.no_grad():
            if best_images is None:
                best_images, best_rate, initial = x.detach().clone(), rate.detach().clone(), rate.detach().clone()
            else:
                better = objective.score(rate) > objective.score(best_rate)
                best_images[better] = x.detach()[better]
                best_rate = torch.where(better, rate.detach(), best_rate)
        if step == steps:
            break
        objective.loss(z, rate).sum().backward()
        with torch.no_grad():
            update(param)
        if on_step is not None:
            on_step()
    return AscentResult(best_images, best_rate, initial)
