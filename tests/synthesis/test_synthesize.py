"""synthesize(): shapes, determinism, the objective improving, the ground truth, bad input."""
import numpy as np
import pytest
import torch

from daenr_fast.synthesis import synthesize
from daenr_fast.synthesis.synthesize import check_methods, start_indices

NEURONS = [0, 3, 7]


@pytest.fixture(scope="module")
def cae_result(opened):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)       # as in the tests (the same seed gives the same images at one thread count)
    try:
        return synthesize(opened("cae-fr"), NEURONS, steps=6, restarts=2, seed=1, progress=False)
    finally:
        torch.set_num_threads(previous)


def test_shapes_and_both_methods(cae_result):
    r = cae_result
    assert list(r.methods) == ["decoder", "pixel"]
    assert r.start_index.shape == (3, 2) and r.natural.images.shape == (3, 32, 32)
    for m in r.methods.values():
        assert m.images.shape == (3, 32, 32) and m.images.dtype == np.float32
        assert m.predicted.shape == m.true.shape == (3,)
        assert m.restart_predicted.shape == m.start_predicted.shape == (3, 2)
        assert np.array_equal(m.predicted, m.restart_predicted[np.arange(3), m.best_restart])
        assert m.images.min() >= -1 and m.images.max() <= 1


def test_same_seed_same_images_other_seed_other_starts(opened, cae_result):
    again = synthesize(opened("cae-fr"), NEURONS, steps=6, restarts=2, seed=1, progress=False)
    for name, m in cae_result.methods.items():
        assert np.array_equal(m.images, again.methods[name].images)
        assert np.array_equal(m.predicted, again.methods[name].predicted)
    assert not np.array_equal(start_indices(2, np.array(NEURONS), 2, 1008), cae_result.start_index)
    # a neuron's starting images do not depend on the other neurons asked for
    assert np.array_equal(start_indices(1, np.array([3]), 2, 1008)[0], cae_result.start_index[1])


def test_the_objective_improves_on_the_model(cae_result):
    for m in cae_result.methods.values():
        assert (m.predicted > m.start_predicted.max(axis=1)).all(), m.method


def test_target_objective_moves_towards_the_target(opened):
    run = opened("cnn-fr")
    result = synthesize(run, [2, 5], objective="target:3.0", steps=6, restarts=1, progress=False)
    pixel = result.methods["pixel"]
    assert (np.abs(pixel.predicted - 3.0) < np.abs(pixel.start_predicted[:, 0] - 3.0)).all()
    assert result.natural.test_index.shape == (2,)


def test_true_rates_are_the_simulators(opened, cae_result):
    run = opened("cae-fr")
    stored = np.asarray(run.splits.ground_truth["test_rates"])
    nat = cae_result.natural
    assert np.allclose(nat.true, stored[nat.test_index, NEURONS], rtol=1e-5)
    assert np.allclose(nat.true_best, stored[:, NEURONS].max(axis=0), rtol=1e-5)
    # the natural image is the best recorded one (trial-averaged test response)
    recorded = run.splits.tensors("test")[1].numpy()[:, NEURONS]
    assert np.array_equal(nat.test_index, recorded.argmax(axis=0))
    for m in cae_result.methods.values():
        assert np.allclose(m.true, run.truth.rates(m.images)[np.arange(3), NEURONS])


@pytest.mark.parametrize("model", ["vae-fr", "vq-vae-fr"])
def test_decoder_method_on_the_other_autoencoders(opened, model):
    result = synthesize(opened(model), [1], methods=["decoder"], steps=3, restarts=1, progress=False)
    m = result.methods["decoder"]
    assert list(result.methods) == ["decoder"] and m.images.shape == (1, 32, 32)
    assert m.predicted[0] >= m.start_predicted[0, 0]


def test_a_cnn_baseline_has_the_pixel_method_only(opened):
    run = opened("cnn-fr")
    assert check_methods(run, None) == ["pixel"]
    with pytest.raises(ValueError, match="--method decoder: .*has no decoder"):
        synthesize(run, [0], methods="decoder", steps=1, restarts=1, progress=False)


@pytest.mark.parametrize("kwargs,message", [
    (dict(neurons=[55]), "--neurons: unknown neuron 55: the run has 55 neurons"),
    (dict(neurons=[-1]), "--neurons: unknown neuron -1"),
    (dict(neurons=[1, 1]), "--neurons: neuron(s) 1 given more than once"),
    (dict(neurons=[1.5]), "--neurons: neuron indices must be integers"),
    (dict(neurons=[]), "--neurons: no neuron given"),
    (dict(steps=0), "--steps must be an integer >= 1"),
    (dict(restarts=0), "--restarts must be an integer >= 1"),
    (dict(seed=-1), "--seed must be an integer >= 0"),
    (dict(methods="pixels"), "--method must be decoder and/or pixel"),
    (dict(objective="min"), "--objective must be"),
])
def test_bad_input_names_the_argument(opened, kwargs, message):
    args = {**dict(neurons=[0], steps=1, restarts=1, progress=False), **kwargs}
    with pytest.raises(ValueError) as info:
        synthesize(opened("cae-fr"), args.pop("neurons"), **args)
    assert message in str(info.value)
