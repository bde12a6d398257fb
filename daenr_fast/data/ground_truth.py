"""The simulator's ground truth as a function: the noise-free rate of every simulated neuron for any image.

API::

    from daenr_fast.data import GroundTruth, ground_truth_for

    truth = ground_truth_for("sim:region3")         # or "sim:region3:seed=1", a .npz written by `daenr simulate`;
                                                   # None for recordings (antolik:..., other .npz files)
    truth = GroundTruth.from_spec("sim:region3")    # the same, but ValueError for a spec that is not simulated
    truth = GroundTruth.from_run("runs/x")          # from a run folder: its ground_truth.npz if present, else
                                                   # the ``data`` spec of its config.json (regenerated)
    rates = truth.rates(images)                     # (N, 32, 32) or (N, 1, 32, 32) model images -> (N, n) float64
    x = truth.model_images(stimuli)                 # (N, 31, 31) raw stimuli in [0, 1] -> (N, 32, 32) model images
    truth.subset(index); truth.save("gt.npz"); GroundTruth.load("gt.npz")

Image space: ``rates`` takes the images the models see, i.e. what :func:`daenr_fast.data.prepare` (default
``size=32``) yields: the 31 x 31 stimulus resized to 32 x 32 (bilinear, pixel centres aligned) and mapped to [-1, 1]
with the training set's intensity range ``(lo, hi)`` (``x' = 2 (x - lo) / (hi - lo) - 1``; -1 is the darkest and
+1 the brightest training pixel). The simulated neurons themselves are defined on this 32 x 32 grid: their
Gabor filters (:mod:`.neurons`) are sampled at the model pixels' positions in the stimulus field, so the rates of
the dataset's own images are exactly ``truth.rates(prepare(dataset).test.images)`` (and likewise for the training
and validation images). Any finite values are accepted, also outside [-1, 1]: the drives are linear (simple
cells) or the energy of a linear quadrature pair (complex cells) in the pixel values, divided by the energy in
two end zones for end-stopped cells.

Rate transform for any image: ``rate_i = m_i exp(b_i z_i - b_i^2 / 2)`` with ``z_i`` the neuron's drive mapped
through the quantiles of its drives over the 1800 / 1260 / 1800 training images (:func:`.neurons.gaussianize`):
piecewise-linear between the reference quantiles, and continued linearly (in ``z``, so exponentially in rate)
beyond the lowest and highest reference drive with the slope of the outermost 1% of the quantiles. Rates are
therefore continuous and strictly increasing in the drive. The drives of plain simple and complex cells grow in
proportion to contrast, so an image of higher contrast than any natural patch can exceed every training rate;
those of end-stopped cells saturate (``D -> E / S``), so their rates stay bounded as contrast grows.

Persistence: simulation is deterministic in ``(region, seed)``, so a spec (as stored in a run's ``config.json``
``data``) is enough to regenerate the ground truth; :attr:`GroundTruth.version` (= :data:`SIMULATOR_VERSION`)
records which simulator made it. :meth:`GroundTruth.save` writes every parameter (receptive fields, the reference
quantiles, the intensity range) to a ``.npz``, so a run folder holding ``ground_truth.npz`` stays evaluable
even after the simulator changes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

from .image_stats import image_stack
from .neurons import Population, gaussianize, raw_drive, rates

#: Side of the model images the neurons are defined on (the default of :func:`daenr_fast.data.prepare`).
MODEL_SIZE = 32
#: Changes whenever the same ``(region, seed)`` gives different rates.
SIMULATOR_VERSION = 3
#: Population fields newer than version 2 of the saved files, with the value that means "absent".
LATER_FIELDS = {"norm_sigma": np.inf, "surround": 1.0}
#: File name of a saved ground truth inside a run folder (read first by :meth:`GroundTruth.from_run`).
RUN_FILENAME = "ground_truth.npz"


@dataclass
class GroundTruth:
    """The noise-free response function of one simulated population (module docstring).

    Attributes:
        population: receptive fields, mean rates and slopes of the ``n`` neurons.
        reference: (M, n) sorted raw drives of the M training model images (the quantiles of the rate transform).
        intensity_range: (lo, hi), the raw stimulus intensities mapped to -1 and 1 (:meth:`model_images`).
        spec: the dataset spec it belongs to, e.g. ``"sim:region3:seed=0"``.
        neurons: (n,) indices of these neurons in the full simulated population (a :meth:`subset` keeps them).
        version: :data:`SIMULATOR_VERSION` of the simulator that made it.
        image_size: side of the model images (:data:`MODEL_SIZE`).
    """

    population: Population
    reference: np.ndarray
    intensity_range: tuple[float, float]
    spec: str
    neurons: np.ndarray
    version: int = SIMULATOR_VERSION
    image_size: int = MODEL_SIZE

    @property
    def n_neurons(self) -> int:
        return self.population.n

    @classmethod
    def fit(cls, population: Population, train_drive: np.ndarray, intensity_range, spec: str) -> "GroundTruth":
        """The ground truth of ``population`` with the rate transform referenced to the raw drives
        ``train_drive`` (M, n) of its M >= 2 training model images (:meth:`drive`)."""
        reference = np.sort(np.asarray(train_drive, dtype=np.float64), axis=0)
        if reference.ndim != 2 or reference.shape[1] != population.n or reference.shape[0] < 2:
            raise ValueError(f"train_drive: expected (M >= 2, {population.n}) drives, got shape {reference.shape}")
        lo, hi = (float(v) for v in intensity_range)
        return cls(population=population, reference=reference, intensity_range=(lo, hi), spec=str(spec),
                   neurons=np.arange(population.n))

    def drive(self, images) -> np.ndarray:
        """(N, n) float64 raw drives of model images (shapes as in :meth:`rates`)."""
        return raw_drive(self.population, image_stack(images, size=self.image_size))

    def rates(self, images) -> np.ndarray:
        """Noise-free rates (expected spike counts per image) of every neuron.

        Args:
            images: (N, 32, 32) or (N, 1, 32, 32) model images (numpy or torch, any real dtype, finite).

        Returns:
            (N, n) float64, all > 0; deterministic.
        """
        return self.transform(self.drive(images))

    def transform(self, drive: np.ndarray) -> np.ndarray:
        """The rate transform: (N, n) raw drives -> (N, n) rates (module docstring)."""
        return rates(gaussianize(drive, self.reference), self.population)

    def model_images(self, stimuli) -> np.ndarray:
        """Raw stimuli (N, 31, 31) as the models see them: (N, 32, 32) float32, exactly as
        :func:`daenr_fast.data.prepare` maps this dataset's test images (clipped to [-1, 1])."""
        from .preprocess import resize, to_unit_range

        x = image_stack(stimuli, size=self.population.size)
        lo, hi = self.intensity_range
        return to_unit_range(resize(x, self.image_size), lo, hi)[:, 0].numpy()

    def subset(self, index) -> "GroundTruth":
        """The same ground truth restricted to the neurons ``index`` (positions in this object)."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < -self.n_neurons or idx.max() >= self.n_neurons:
            raise ValueError(f"index: expected 1 or more neuron positions in [0, {self.n_neurons}), got {idx.tolist()}")
        return dataclasses.replace(self, population=self.population.select(idx), reference=self.reference[:, idx],
                                   neurons=self.neurons[idx])

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, path) -> str:
        """Write every parameter to a ``.npz`` (no pickles); returns the path."""
        path = os.fspath(path)
        arrays = {f"population_{f.name}": np.asarray(getattr(self.population, f.name))
                  for f in dataclasses.fields(self.population)}
        meta = {"spec": self.spec, "version": self.version, "image_size": self.image_size,
                "intensity_range": list(self.intensity_range)}
        with open(path, "wb") as handle:
            np.savez_compressed(handle, reference=self.reference, neurons=self.neurons,
                                meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path) -> "GroundTruth":
        """Read a file written by :meth:`save`."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            from .dataset import MissingDataFile

            raise MissingDataFile(f"{path}: no such ground-truth file")
        with np.load(path, allow_pickle=False) as npz:
            try:
                meta = json.loads(str(npz["meta"]))
                fields = {f.name: npz[f"population_{f.name}"] for f in dataclasses.fields(Population)
                          if f"population_{f.name}" in npz.files or f.name not in LATER_FIELDS}
                reference, neurons = npz["reference"], npz["neurons"]
            except KeyError as err:
                raise ValueError(f"{path}: not a ground-truth file written by GroundTruth.save (missing {err})") from None
        fields["size"] = int(fields["size"])
        for name, fill in LATER_FIELDS.items():  # files of simulator version 2, before end-stopped cells
            fields.setdefault(name, np.full(len(fields["orientation"]), fill))
        return cls(population=Population(**fields), reference=reference, neurons=neurons,
                   intensity_range=tuple(meta["intensity_range"]), spec=meta["spec"], version=int(meta["version"]),
                   image_size=int(meta["image_size"]))

    @classmethod
    def from_spec(cls, spec) -> "GroundTruth":
        """The ground truth of a simulated dataset spec; ``ValueError`` for recordings or unknown specs."""
        truth = ground_truth_for(spec)
        if truth is None:
            raise ValueError(f"{spec!r} is not simulated data: only sim:regionK[:seed=N] specs and .npz files "
                             "written by `daenr simulate` have a ground truth")
        return truth

    @classmethod
    def from_run(cls, run_dir) -> "GroundTruth":
        """The ground truth of a run folder: its ``ground_truth.npz`` if present, else regenerated from the
        ``data`` spec in its ``config.json``; ``ValueError`` if the run's data is not simulated."""
        run_dir = os.fspath(run_dir)
        saved = os.path.join(run_dir, RUN_FILENAME)
        if os.path.isfile(saved):
            return cls.load(saved)
        config = os.path.join(run_dir, "config.json")
        if not os.path.isfile(config):
            from .dataset import MissingDataFile

            raise MissingDataFile(f"{run_dir}: neither {RUN_FILENAME} nor config.json (not a run folder)")
        with open(config, encoding="utf-8") as handle:
            spec = json.load(handle).get("data")
        if spec is None:
            raise ValueError(f"{config}: no 'data' entry (the dataset spec of the run)")
        return cls.from_spec(spec)


def sim_spec(region: int, seed: int) -> str:
    """The canonical spec of a simulated region, ``"sim:region{region}:seed={seed}"``."""
    return f"sim:region{int(region)}:seed={int(seed)}"


def ground_truth_for(spec) -> GroundTruth | None:
    """The :class:`GroundTruth` of a dataset spec (forms of :func:`daenr_fast.data.load`), or None for recordings.

    ``sim:`` specs are regenerated (deterministic in region and seed). A ``.npz`` written by ``daenr simulate``
    (meta ``source == "simulated"``) is regenerated from its region and seed and checked against its stored
    ``gt_test_rates`` (``ValueError`` if another simulator version wrote it); a neuron subset recorded in its meta
    is applied. Other ``.npz`` files and ``antolik:`` folders give None.
    """
    from .simulate import simulated_truth
    from .spec import load, parse_sim

    parsed = parse_sim(spec)
    if parsed is not None:
        return simulated_truth(*parsed).truth
    dataset = load(spec)
    meta = dataset.meta
    if meta.get("source") != "simulated" or "region" not in meta or "seed" not in meta:
        return None
    truth = simulated_truth(int(meta["region"]), int(meta["seed"])).truth
    if meta.get("neuron_subset") is not None:
        truth = truth.subset(meta["neuron_subset"])
    stored = (dataset.ground_truth or {}).get("test_rates")
    if stored is not None:
        again = truth.rates(truth.model_images(dataset.test_images))
        if np.shape(stored) != again.shape or not np.allclose(stored, again, rtol=1e-4, atol=1e-6):
            raise ValueError(f"{spec}: its stored test rates differ from the simulator's (version "
                             f"{SIMULATOR_VERSION}) for region {meta['region']}, seed {meta['seed']}; it was "
                             "written by another simulator version: simulate it again")
    return truth
