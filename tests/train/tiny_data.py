"""The tiny in-memory data set of the training tests (a few dozen 16x16 images, 6 Gaussian-RF neurons); a module
of its own so that test files import it by name (``from tiny_data import tiny_dataset``)."""
import numpy as np

from daenr_fast.data import NeuralDataset


def tiny_dataset(n_train=60, n_test=10, repeats=3, n_neurons=6, size=16, seed=0, counts=True):
    """Linear-Gaussian-RF neurons with exponential nonlinearity; Poisson counts (or signed dF/F-like values)."""
    rng = np.random.default_rng(seed)
    images = rng.random((n_train + n_test, size, size))
    centers = rng.uniform(4, size - 5, (n_neurons, 2))
    yy, xx = np.mgrid[:size, :size]
    rfs = np.exp(-((yy[None] - centers[:, :1, None]) ** 2 + (xx[None] - centers[:, 1:, None]) ** 2) / 4.0)
    drive = images.reshape(len(images), -1) @ rfs.reshape(n_neurons, -1).T
    drive = (drive - drive.mean(0)) / drive.std(0)
    rates = np.exp(0.2 + 0.8 * drive)
    train_rates, test_rates = rates[:n_train], rates[n_train:]
    if counts:
        train = rng.poisson(train_rates).astype(np.float32)
        test = rng.poisson(np.broadcast_to(test_rates, (repeats,) + test_rates.shape)).astype(np.float32)
    else:
        train = (train_rates - 1.5 + 0.3 * rng.standard_normal(train_rates.shape)).astype(np.float32)
        test = (test_rates - 1.5 + 0.3 * rng.standard_normal((repeats,) + test_rates.shape)).astype(np.float32)
    scale = 32 / size
    truth = {"train_rates": train_rates.astype(np.float32), "test_rates": test_rates.astype(np.float32),
             "rf_centers": ((centers + 0.5) * scale - 0.5).astype(np.float32)}
    return NeuralDataset(train_images=images[:n_train], train_responses=train, test_images=images[n_train:],
                         test_responses=test, ground_truth=truth, name="tiny")
