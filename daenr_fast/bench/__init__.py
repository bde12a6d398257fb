"""Benchmarks of the fused ops and of end-to-end training (``daenr bench``).

* :mod:`~daenr_fast.bench.timing` - median/IQR timing (CUDA events on a GPU) and peak extra memory;
* :mod:`~daenr_fast.bench.readout`, :mod:`~daenr_fast.bench.gaussian`, :mod:`~daenr_fast.bench.poisson`,
  :mod:`~daenr_fast.bench.vq` - the cases and implementations of each op (backends, eager reference, best eager
  formulation, ``torch.compile``, limit);
* :mod:`~daenr_fast.bench.runner` - correctness check, round-robin timing and memory of each case;
* :mod:`~daenr_fast.bench.end_to_end` - training steps per second, fused ops vs the torch backend;
* :mod:`~daenr_fast.bench.report` - tables, JSON, CSV, Markdown and PNG plots with machine, versions and date.
"""
from daenr_fast.bench import gaussian, poisson, readout, vq

#: op name in ``daenr bench --ops`` -> its case module
OPS = {readout.OP: readout, gaussian.OP: gaussian, poisson.OP: poisson, vq.OP: vq}

__all__ = ["OPS"]
