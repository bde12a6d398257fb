"""Fused functional ops (one file per op); :mod:`daenr_fast.ops.reference` holds the pure-PyTorch truth."""
from daenr_fast.ops.factorized_readout import factorized_readout
from daenr_fast.ops.poisson_loss import poisson_loss
from daenr_fast.ops.vq_lookup import vq_lookup

__all__ = ["factorized_readout", "poisson_loss", "vq_lookup"]
