"""Fixtures for the reproduction tests: a tiny simulated data set in the generic .npz format."""
import numpy as np
import pytest

from daenr_fast.data import NeuralDataset, save_npz

N_TRAIN, N_TEST, REPEATS, N_NEURONS, SIZE = 48, 10, 4, 8, 32


def _images(rng, n):
    """Smooth random images: white noise blurred by a separable box filter, in [0, 1]."""
    x = rng.normal(size=(n, SIZE, SIZE))
    kernel = np.ones(5) / 5.0
    for axis in (1, 2):
        x = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, x)
    return (x - x.min()) / (x.max() - x.min())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Path of a tiny data set: 48 training and 10 test images (4 repeats), 8 neurons, half driven by a
    random linear filter of the image and half pure noise."""
    rng = np.random.default_rng(0)
    train, test = _images(rng, N_TRAIN), _images(rng, N_TEST)
    filters = rng.normal(size=(N_NEURONS, SIZE * SIZE)) / SIZE
    filters[N_NEURONS // 2:] = 0.0

    def rates(images):
        drive = (images.reshape(len(images), -1) - 0.5) @ filters.T
        return np.exp(np.clip(drive, -3, 3))

    dataset = NeuralDataset(
        train_images=train, train_responses=rng.poisson(rates(train)).astype(np.float32),
        test_images=test, test_responses=rng.poisson(np.broadcast_to(rates(test), (REPEATS, N_TEST, N_NEURONS)))
        .astype(np.float32),
        ground_truth={"train_rates": rates(train), "test_rates": rates(test)}, name="tiny")
    return str(save_npz(dataset, tmp_path_factory.mktemp("tiny") / "tiny.npz"))
