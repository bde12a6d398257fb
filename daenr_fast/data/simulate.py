"""The built-in simulated V1 experiment (:func:`simulate`).

Natural-image patches, displayed as each region's experiment displayed its images (:mod:`.stimuli`), are shown
to a population of model simple and complex cells, some of them end-stopped (:mod:`.neurons`), whose
receptive fields cluster around a region-specific position; responses are Poisson spike counts of the noise-free
rates. The neurons see the stimuli as the models do, resized to 32 x 32 and mapped to [-1, 1]
(:func:`daenr_fast.data.prepare`); their response function for any image is :class:`daenr_fast.data.GroundTruth`
(:func:`simulated_truth`). Training images are shown once, the 50 test images ``n_repeats`` times with
independent draws. Sizes and calibration per region are in :mod:`.regions`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .dataset import NeuralDataset
from .ground_truth import MODEL_SIZE, SIMULATOR_VERSION, GroundTruth, sim_spec
from .neurons import Population, drive_components, envelopes, slopes_for_oracle
from .preprocess import resize, to_unit_range
from .regions import (
    ASPECT_RANGE, COMPLEX_FRACTION, MEAN_RATE_SPREAD, ORACLE_SPREAD, SIGMA_PER_WAVELENGTH,
    SIGMA_RANGE, STIMULUS_SIZE, STOP_STRENGTH_RANGE, SURROUND_RANGE, RegionSpec, region_spec,
)
from .stimuli import stimuli

def to_model_coords(points: np.ndarray, size: int = STIMULUS_SIZE, model_size: int = MODEL_SIZE) -> np.ndarray:
    """Map pixel coordinates of a ``size``-pixel image to a ``model_size``-pixel resize of it (pixel centres)."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * (model_size / size) - 0.5


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), n))


def sample_population(spec: RegionSpec, rng: np.random.Generator, stop_rng: np.random.Generator) -> Population:
    """Random receptive fields for the ``spec.n_neurons`` neurons of a region.

    ``stop_rng`` draws which cells are end-stopped (a fraction ``spec.end_stopped_fraction``), their end-zone
    distance (``SURROUND_RANGE``, in sigma) and their relative semi-saturation (log-uniform in
    ``STOP_STRENGTH_RANGE``), returned in ``norm_sigma``; :func:`simulated_truth` multiplies it by the median
    end-zone energy over the training images, so the suppression acts at the same strength whatever the stimulus
    contrast.
    """
    n = spec.n_neurons
    lo, hi = 4.0, STIMULUS_SIZE - 5.0
    centers = np.clip(np.asarray(spec.center) + rng.normal(0.0, spec.center_spread, (n, 2)), lo, hi)
    sigma = np.exp(rng.uniform(np.log(SIGMA_RANGE[0]), np.log(SIGMA_RANGE[1]), n))
    mean_rate = rng.lognormal(0.0, MEAN_RATE_SPREAD, n)
    pop = Population(
        centers=centers,
        orientation=rng.uniform(0.0, np.pi, n),
        sigma=sigma,
        wavelength=sigma / rng.uniform(*SIGMA_PER_WAVELENGTH, n),
        phase=rng.uniform(0.0, 2 * np.pi, n),
        aspect=rng.uniform(*ASPECT_RANGE, n),
        complex_cell=rng.random(n) < COMPLEX_FRACTION,
        mean_rate=spec.mean_rate * mean_rate / mean_rate.mean(),
        slope=np.ones(n),
        size=STIMULUS_SIZE,
        norm_sigma=np.full(n, np.inf),
        surround=_log_uniform(stop_rng, SURROUND_RANGE, n),
    )
    stopped = stop_rng.random(n) < spec.end_stopped_fraction
    pop.norm_sigma[stopped] = _log_uniform(stop_rng, STOP_STRENGTH_RANGE, n)[stopped]
    return pop


def reliability_targets(spec: RegionSpec, rng: np.random.Generator) -> np.ndarray:
    """(n,) per-neuron expected oracle correlations: logit-normal around ``spec.oracle`` (its median)."""
    logit = np.log(spec.oracle / (1.0 - spec.oracle)) + rng.normal(0.0, ORACLE_SPREAD, spec.n_neurons)
    return 1.0 / (1.0 + np.exp(-logit))


def _seeds(spec: RegionSpec, seed) -> list[np.random.SeedSequence]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence([int(seed), spec.region]).spawn(3)


class SimulatedTruth(NamedTuple):
    """Everything of a simulated region but the spikes (:func:`simulated_truth`).

    Attributes:
        images: (N + T, 31, 31) float32 stimuli in [0, 1], the N training images first.
        model_images: (N + T, 32, 32) float32, the stimuli as :func:`daenr_fast.data.prepare` gives them.
        truth: the :class:`GroundTruth`, its rate transform referenced to the N training images.
        rates: (N + T, n) float64 noise-free rates, ``truth.rates(model_images)``.
        target: (n,) target oracle correlations.
    """

    images: np.ndarray
    model_images: np.ndarray
    truth: GroundTruth
    rates: np.ndarray
    target: np.ndarray


def simulated_truth(region: int = 3, seed: int = 0) -> SimulatedTruth:
    """The stimuli and the noise-free response function of one region (:class:`SimulatedTruth`)."""
    spec = region_spec(region)
    stim_seq, pop_seq, _ = _seeds(spec, seed)
    images = stimuli(spec.n_train + spec.n_test, spec.stimulus, np.random.default_rng(stim_seq), STIMULUS_SIZE)
    resized = resize(images, MODEL_SIZE)
    train = resized[: spec.n_train]
    intensity_range = (float(train.min()), float(train.max()))
    model = to_unit_range(resized, *intensity_range)[:, 0].numpy()
    target_seq, stop_seq = pop_seq.spawn(2)
    pop = sample_population(spec, np.random.default_rng(pop_seq), np.random.default_rng(stop_seq))
    target = reliability_targets(spec, np.random.default_rng(target_seq))
    pop.slope = slopes_for_oracle(target, pop.mean_rate, spec.n_repeats)
    drive, end = drive_components(pop, model)
    stopped = pop.end_stopped
    pop.norm_sigma[stopped] *= np.median(end[: spec.n_train], axis=0)
    drive[:, stopped] /= pop.norm_sigma[stopped] + end  # raw_drive(pop, model), sharing the products above
    truth = GroundTruth.fit(pop, drive[: spec.n_train], intensity_range, sim_spec(spec.region, seed))
    return SimulatedTruth(images, model, truth, truth.transform(drive), target)


def simulate(region: int = 3, seed: int = 0) -> NeuralDataset:
    """Simulate one region of the experiment.

    Args:
        region: 1, 2 or 3 (Table 7: 103 / 55 / 102 neurons, 1800 / 1260 / 1800 training images,
            50 test images with 10 / 8 / 12 repeats).
        seed: the same ``(region, seed)`` always gives the same dataset.

    Returns:
        A :class:`NeuralDataset` with 31 x 31 images in [0, 1], integer spike counts as float32, and
        ``ground_truth``: ``train_rates`` (N, n), ``test_rates`` (T, n), ``rf_centers`` (n, 2) as (row, col)
        on the 32 x 32 preprocessed image, ``rf_centers_stimulus`` (n, 2) on the 31 x 31 stimulus,
        ``rf_envelopes`` (n, 32, 32) (Gaussian envelopes, peak 1), ``cell_types`` (n,) "simple", "complex",
        "simple-end-stopped" or "complex-end-stopped", ``norm_sigma`` (inf: not end-stopped) and ``surround`` (n,),
        ``orientation``, ``sigma``, ``wavelength``, ``phase`` (n,) (pixels / radians of the stimulus grid).
    """
    spec = region_spec(region)
    spike_seq = _seeds(spec, seed)[2]
    images, _, truth, rate, target = simulated_truth(spec.region, seed)
    pop = truth.population
    train_rates, test_rates = rate[: spec.n_train], rate[spec.n_train:]
    spikes = np.random.default_rng(spike_seq)
    train_responses = spikes.poisson(train_rates)
    test_responses = spikes.poisson(np.broadcast_to(test_rates, (spec.n_repeats,) + test_rates.shape))
    ground_truth = {
        "train_rates": train_rates.astype(np.float32),
        "test_rates": test_rates.astype(np.float32),
        "rf_centers": to_model_coords(pop.centers).astype(np.float32),
        "rf_centers_stimulus": pop.centers.astype(np.float32),
        "rf_envelopes": envelopes(pop, MODEL_SIZE),
        "cell_types": pop.cell_types,
        "norm_sigma": pop.norm_sigma.astype(np.float32),
        "surround": pop.surround.astype(np.float32),
        "orientation": pop.orientation.astype(np.float32),
        "sigma": pop.sigma.astype(np.float32),
        "wavelength": pop.wavelength.astype(np.float32),
        "phase": pop.phase.astype(np.float32),
        "slope": pop.slope.astype(np.float32),
        "target_oracle": target.astype(np.float32),
    }
    meta = {
        "source": "simulated",
        "region": spec.region,
        "seed": int(seed),
        "simulator_version": SIMULATOR_VERSION,
        "stimulus_size": STIMULUS_SIZE,
        "intensity_range": [0.0, 1.0],
        "response_unit": "spike count",
    }
    return NeuralDataset(
        train_images=images[: spec.n_train],
        train_responses=train_responses,
        test_images=images[spec.n_train:],
        test_responses=test_responses,
        neuron_ids=np.arange(spec.n_neurons),
        meta=meta,
        ground_truth=ground_truth,
        name=f"sim-region{spec.region}",
    )
