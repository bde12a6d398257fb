"""Data: the built-in simulated V1 experiment, the Antolik 2016 loader, the generic ``.npz`` format, and the
paper's preprocessing.

* :func:`simulate` / :func:`load` (``"sim:region3"``, ``"antolik:PATH/region3"``, ``"PATH.npz"``) return a
  :class:`NeuralDataset`; :func:`save_npz` / :func:`load_npz` write and read the generic format.
* :func:`prepare` resizes to 32 x 32, maps intensities to [-1, 1] and splits into :class:`Splits`.
* :func:`ground_truth_for` / :class:`GroundTruth` give a simulated region's noise-free rates for any image.
* :func:`stats` computes the response and test-image statistics the simulator is calibrated to; the image
  statistics themselves (RMS contrast, spectrum slope, intensity distribution) are in :mod:`.image_stats`.
"""
from .antolik import load_antolik
from .dataset import DataError, MissingDataFile, NeuralDataset, validate
from .ground_truth import GroundTruth, ground_truth_for
from .npz_format import load_npz, save_npz
from .preprocess import ResponseDataset, Splits, prepare
from .regions import REGIONS, RegionSpec, region_spec
from .simulate import simulate
from .spec import load
from .stats import format_stats, lifetime_sparseness, stats

__all__ = [
    "NeuralDataset", "DataError", "MissingDataFile", "validate",
    "simulate", "load", "load_antolik", "load_npz", "save_npz",
    "prepare", "Splits", "ResponseDataset",
    "stats", "format_stats", "lifetime_sparseness",
    "REGIONS", "RegionSpec", "region_spec",
    "GroundTruth", "ground_truth_for",
]
