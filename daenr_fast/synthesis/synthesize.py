"""Images that drive chosen neurons: :func:`synthesize` (the Python side of ``daenr synthesize``).

For each chosen neuron k and each method (``decoder``: :mod:`.decoder_method`, ``pixel``: :mod:`.pixel_method`),
``restarts`` optimisations start from natural training images drawn with ``numpy.random.default_rng([seed, k])``
(the same starting images for both methods, so they differ only in what they optimise), each running ``steps``
updates of the :class:`~.objective.Objective`; the restart with the best predicted score is kept. Neurons x
restarts are optimised as one batch (in chunks of at most :data:`CHUNK_IMAGES` images).

Each neuron is also given its best natural test image: the one whose recorded trial-averaged response scores best
under the objective (what an experiment already has). On simulated data every image is then shown to the
simulator's true neuron (:attr:`~.run.SynthesisRun.truth`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from daenr_fast.synthesis.ascent import ascend
from daenr_fast.synthesis.decoder_method import DecoderMethod
from daenr_fast.synthesis.objective import Objective, parse_objective, select_best
from daenr_fast.synthesis.pixel_method import PixelMethod

METHODS = {"decoder": DecoderMethod, "pixel": PixelMethod}
DEFAULT_STEPS = 200
DEFAULT_RESTARTS = 4
DEFAULT_SEED = 0
#: images optimised in one batch (neurons x restarts are cut into chunks of whole neurons)
CHUNK_IMAGES = 256


@dataclass
class MethodImages:
    """One method's result for K neurons and R restarts.

    Attributes:
        method: ``decoder`` or ``pixel``.
        images: (K,S,S) float32 model-space images (the best restart of each neuron).
        predicted: (K,) predicted rate of each image's own neuron.
        restart_predicted: (K,R) predicted rate of every restart; ``start_predicted`` (K,R) before optimising.
        best_restart: (K,) which restart was kept.
        true: (K,) the true rate of each image's own neuron (simulated data), else None.
    """

    method: str
    images: np.ndarray
    predicted: np.ndarray
    restart_predicted: np.ndarray
    start_predicted: np.ndarray
    best_restart: np.ndarray
    true: Optional[np.ndarray] = None


@dataclass
class NaturalImages:
    """The best natural test image of each neuron: ``test_index`` (K,), ``images`` (K,S,S), ``recorded`` (K,)
    trial-averaged response, ``predicted`` (K,), ``true`` (K,) or None; ``true_best`` (K,) the best true rate over
    all test images (simulated data) or None."""

    test_index: np.ndarray
    images: np.ndarray
    recorded: np.ndarray
    predicted: np.ndarray
    true: Optional[np.ndarray] = None
    true_best: Optional[np.ndarray] = None


@dataclass
class SynthesisResult:
    """Everything :func:`synthesize` computed (see :func:`daenr_fast.synthesis.report.write_report`)."""

    run: object
    neurons: np.ndarray
    objective: Objective
    steps: int
    restarts: int
    seed: int
    start_index: np.ndarray                      # (K,R) training images the restarts start from
    natural: NaturalImages
    methods: Dict[str, MethodImages] = field(default_factory=dict)


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; a ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_methods(run, methods: Optional[Sequence[str]]) -> list:
    """The methods to run: all the run supports when None (``pixel`` alone for a CNN baseline); unknown names
    and ``decoder`` on a run without one are ValueErrors naming ``--method``."""
    if methods is None:
        return ["decoder", "pixel"] if run.has_decoder else ["pixel"]
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",")]
    methods = list(methods)
    if not methods:
        raise ValueError("--method: no method given (decoder, pixel)")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"--method must be decoder and/or pixel, got {m!r}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--method: a method given twice ({','.join(methods)})")
    if "decoder" in methods and not run.has_decoder:
        raise ValueError(f"--method decoder: run {run.run_dir} ({run.label}) has no decoder; use --method pixel, "
                         "or a joint model's run (e.g. cae-fr)")
    return methods


def start_indices(seed: int, neurons: np.ndarray, restarts: int, n_images: int) -> np.ndarray:
    """(K,R) distinct training-image indices per neuron from ``default_rng([seed, neuron])`` (so a neuron's
    starting images do not depend on which other neurons are asked for)."""
    out = np.empty((len(neurons), restarts), dtype=np.int64)
    for i, k in enumerate(neurons):
        out[i] = np.random.default_rng([int(seed), int(k)]).choice(n_images, restarts, replace=restarts > n_images)
    return out


def best_natural(run, neurons: np.ndarray, objective: Objective) -> NaturalImages:
    """Per neuron, the test image whose recorded trial-averaged response scores best (module docstring)."""
    images, recorded = run.splits.tensors("test")
    recorded = recorded.double().numpy()[:, neurons]                        # (T,K)
    index = np.argmax(objective.score(recorded), axis=0)
    cols = np.arange(len(neurons))
    predicted = run.predict(images)[:, neurons]
    result = NaturalImages(test_index=index, images=images[index, 0].numpy().astype(np.float32),
                           recorded=recorded[index, cols], predicted=predicted[index, cols])
    if run.truth is not None:
        true = run.truth.rates(images.numpy())[:, neurons]
        result.true = true[index, cols]
        result.true_best = true[np.argmax(objective.score(true), axis=0), cols]
    return result


def run_method(run, method, neurons: np.ndarray, start_index: np.ndarray, objective: Objective, steps: int,
               bar=None) -> MethodImages:
    """Optimise ``method`` (a :class:`DecoderMethod` / :class:`PixelMethod`) for every neuron x restart."""
    k, r = start_index.shape
    per_chunk = max(1, CHUNK_IMAGES // r)
    images, final, initial = [], [], []
    for lo in range(0, k, per_chunk):
        chunk = slice(lo, min(k, lo + per_chunk))
        neuron = torch.as_tensor(np.repeat(neurons[chunk], r), device=run.device)
        param, update = method.start(torch.as_tensor(start_index[chunk].reshape(-1)))
        done = [0]

        def on_step(done=done) -> None:
            done[0] += 1
            if bar is not None and (done[0] % 10 == 0 or done[0] == steps):
                bar.set_postfix_str(f"step {done[0]}/{steps}")

        out = ascend(run, param, method.to_image, neuron, objective, steps, update, on_step)
        images.append(out.images.cpu())
        final.append(out.rate.cpu())
        initial.append(out.initial_rate.cpu())
        if bar is not None:
            bar.update(len(neuron))
    images, final = torch.cat(images), torch.cat(final)
    best = select_best(objective.score(final), r)
    chosen = torch.arange(k) * r + best
    return MethodImages(method=method.name, images=images[chosen, 0].numpy().astype(np.float32),
                        predicted=final[chosen].double().numpy(),
                        restart_predicted=final.view(k, r).double().numpy(),
                        start_predicted=torch.cat(initial).view(k, r).double().numpy(),
                        best_restart=best.numpy())


def synthesize(run, neurons, methods: Optional[Sequence[str]] = None, objective="max", steps: int = DEFAULT_STEPS,
               restarts: int = DEFAULT_RESTARTS, seed: int = DEFAULT_SEED, progress: bool = True) -> SynthesisResult:
    """Synthesise images for ``neurons`` of ``run`` (module docstring).

    Args:
        run: a :class:`~daenr_fast.synthesis.run.SynthesisRun` (:func:`~daenr_fast.synthesis.run.open_run`).
        neurons: neuron indices (0..n-1).
        methods: ``["decoder", "pixel"]`` or a subset (default: those the run supports).
        objective: ``"max"``, ``"target:RATE"`` or an :class:`Objective`.
        steps, restarts: optimisation steps per restart and restarts per neuron.
        seed: seeds the starting images; the same seed gives the same images.
        progress: show a progress bar over neurons x restarts (per method).

    Returns:
        a :class:`SynthesisResult`; nothing is written (see :func:`daenr_fast.synthesis.report.write_report`).
    """
    neurons = run.check_neurons(neurons)
    objective = parse_objective(objective)
    steps = check_count("--steps", steps)
    restarts = check_count("--restarts", restarts)
    seed = check_count("--seed", seed, minimum=0)
    methods = check_methods(run, methods)
    n_train = run.splits.tensors("train")[0].shape[0]
    starts = start_indices(seed, neurons, restarts, n_train)
    result = SynthesisResult(run=run, neurons=neurons, objective=objective, steps=steps, restarts=restarts,
                             seed=seed, start_index=starts, natural=best_natural(run, neurons, objective))
    for name in methods:
        method = METHODS[name](run)
        with tqdm(total=len(neurons) * restarts, desc=f"{run.label} {name}", unit="image", disable=not progress,
                  dynamic_ncols=True, leave=False) as bar:
            images = run_method(run, method, neurons, starts, objective, steps, bar)
        if run.truth is not None:
            images.true = run.truth.rates(images.images)[np.arange(len(neurons)), neurons]
        result.methods[name] = images
    return result
