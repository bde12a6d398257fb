"""Fused functional ops (one file per op); :mod:`daenr_fast.ops.reference` holds the pure-PyTorch truth."""
from daenr_fast.ops.factorized_readout import factorized_readout

__all__ = ["factorized_readout"]
