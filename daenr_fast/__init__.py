"""daenr_fast: DAE-NR (deep autoencoders with a neural-response readout) as a performance library.

Submodules: :mod:`daenr_fast.ops` (fused functional ops), :mod:`daenr_fast.nn` (modules over them),
:mod:`daenr_fast.models`, :mod:`daenr_fast.data`, :mod:`daenr_fast.train`, :mod:`daenr_fast.metrics`,
:mod:`daenr_fast.experiments`.
"""
__version__ = "0.1.0"
