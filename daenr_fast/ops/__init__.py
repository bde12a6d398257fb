"""Fused functional ops (one file per op); :mod:`daenr_fast.ops.reference` holds the pure-PyTorch truth.

:data:`OPS` maps each op's name to its :class:`~daenr_fast.ops._define.DefinedOp` (backends, dtypes, custom op):
the one list of ops that dispatch, ``daenr info``, ``daenr build``, the benchmarks and the tests read.
"""
from daenr_fast.ops._define import REGISTRY as OPS
from daenr_fast.ops.factorized_readout import factorized_readout
from daenr_fast.ops.gaussian_readout import gaussian_readout
from daenr_fast.ops.poisson_loss import poisson_loss
from daenr_fast.ops.vq_lookup import vq_lookup

__all__ = ["OPS", "factorized_readout", "gaussian_readout", "poisson_loss", "vq_lookup"]
