"""G models of one architecture run as one stacked model: ``torch.func.vmap`` over ``functional_call``.

Every member keeps its own ``nn.Module`` (its parameters are the leaves its own optimizer steps, its buffers the
BatchNorm statistics and fixed masks its checkpoints save). A forward stacks them::

    P_k = stack_g(param_k of member g)      (G, *shape_k)   differentiable: the gradient of member g's loss
                                                            flows back to member g's own parameters
    B_k = stack_g(buffer_k of member g)     (G, *shape_k)
    out = vmap(functional_call(template, (P, B), x))(X)      X (G,B,1,H,W) -> reconstruction (G,B,1,H,W),
                                                                             response z (G,B,n)

so that one call runs the G models (the convolutions become grouped convolutions, the fused readout ops fold the
models into their batch through their vmap rules). In training mode BatchNorm updates the stacked running
statistics B_k in place; :meth:`StackedModel.forward` copies them back to the members afterwards.

Only models whose forward draws no random numbers can be stacked this way (a vmapped random draw is not the
draw a lone run makes from its own seed); ``vmap(randomness="error")`` turns any such draw into an error.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from daenr_fast.models.joint import ModelOutput

#: the ModelOutput fields a stacked forward returns (auxiliary losses come only from VAE / VQ-VAE bottlenecks,
#: which draw random numbers and are not stacked)
OUTPUT_FIELDS = ("reconstruction", "response")


class StackedModel:
    """Run members (identical architecture, in ``members`` order) as one vmapped model.

    Args:
        members: the G member modules; their structure must match the first one's (same parameter and buffer
            names and shapes).
    """

    def __init__(self, members: Sequence[nn.Module]):
        if not members:
            raise ValueError("a stacked model needs at least one member")
        self.template = copy.deepcopy(members[0])  # structure only: its own tensors are replaced in every call
        self.param_names = [name for name, _ in self.template.named_parameters()]
        self.buffer_names = [name for name, _ in self.template.named_buffers()]
        for index, member in enumerate(members):
            shapes = [(n, tuple(t.shape)) for n, t in list(member.named_parameters()) + list(member.named_buffers())]
            expected = [(n, tuple(t.shape)) for n, t in
                        list(self.template.named_parameters()) + list(self.template.named_buffers())]
            if shapes != expected:
                raise ValueError(f"member {index} does not have the architecture of member 0 (its parameter and "
                                 f"buffer names or shapes differ): a grid stacks identical architectures only")
        self.members = list(members)
        self._params = [list(dict(m.named_parameters()).values()) for m in self.members]
        self._buffers = [list(dict(m.named_buffers()).values()) for m in self.members]

    def stacked_parameters(self, which: Sequence[int]) -> Dict[str, Tensor]:
        """name -> (len(which), *shape): the parameters of members ``which``, stacked (differentiable)."""
        return {name: torch.stack([self._params[g][k] for g in which]) for k, name in enumerate(self.param_names)}

    def stacked_buffers(self, which: Sequence[int]) -> Dict[str, Tensor]:
        """name -> (len(which), *shape): copies of the buffers of members ``which``."""
        with torch.no_grad():
            return {name: torch.stack([self._buffers[g][k] for g in which])
                    for k, name in enumerate(self.buffer_names)}

    def _write_back(self, buffers: Dict[str, Tensor], which: Sequence[int]) -> None:
        with torch.no_grad():
            for k, name in enumerate(self.buffer_names):
                torch._foreach_copy_([self._buffers[g][k] for g in which], list(buffers[name].unbind(0)))

    def forward(self, x: Tensor, which: Sequence[int], training: bool) -> ModelOutput:
        """x (len(which), B, 1, H, W) -> the stacked :class:`ModelOutput` of members ``which``.

        ``training`` selects train mode (batch statistics, running statistics updated and written back to the
        members) or eval mode (running statistics).
        """
        which = list(which)
        params, buffers = self.stacked_parameters(which), self.stacked_buffers(which)
        self.template.train(training)

        def one(p, b, image):
            out = functional_call(self.template, (p, b), (image,))
            if out.aux_losses:
                raise ValueError(f"stacked models cannot have auxiliary loss terms ({', '.join(out.aux_losses)})")
            return {f: getattr(out, f) for f in OUTPUT_FIELDS if getattr(out, f) is not None}

        out = vmap(one, randomness="error")(params, buffers, x)
        if training:
            self._write_back(buffers, which)
        return ModelOutput(out.get("reconstruction"), out.get("response"))

    def readout_regularizer(self, which: Sequence[int]) -> Tensor:
        """(len(which),) the members' readout penalties (on their own parameters)."""
        return torch.stack([self.members[g].readout_regularizer() for g in which])


class StackedMembers:
    """The ``model`` argument of :func:`~daenr_fast.train.losses.loss_terms` for a stacked call: its
    ``readout_regularizer()`` is the (G,) penalties of the selected members."""

    def __init__(self, stacked: StackedModel, which: List[int]):
        self.stacked, self.which = stacked, which

    def readout_regularizer(self) -> Tensor:
        return self.stacked.readout_regularizer(self.which)
