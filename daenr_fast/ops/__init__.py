"""Fused functional ops (one file per op); :mod:`daenr_fast.ops.reference` holds the pure-PyTorch truth."""
from daenr_fast.ops.factorized_readout import factorized_readout
from daenr_fast.ops.poisson_loss import poisson_loss

__all__ = ["factorized_readout", "poisson_loss"]
