import numpy as np
import pytest

from daenr_fast.data import NeuralDataset, format_stats, lifetime_sparseness, stats


def test_lifetime_sparseness_known_values():
    n = 10
    r = np.zeros((n, 3))
    r[:, 0] = 1.0          # dense: equal responses -> 0
    r[0, 1] = 5.0          # one image only -> 1
    s = lifetime_sparseness(r)
    assert s[0] == pytest.approx(0.0)
    assert s[1] == pytest.approx(1.0)
    assert np.isnan(s[2])  # silent neuron


def test_oracle_statistic_needs_two_repeats():
    rng = np.random.default_rng(0)
    d = NeuralDataset(
        train_images=rng.random((4, 8, 8)), train_responses=rng.poisson(1.0, (4, 2)).astype(float),
        test_images=rng.random((5, 8, 8)), test_responses=rng.poisson(1.0, (1, 5, 2)).astype(float), name="one-rep",
    )
    assert np.isnan(stats(d)["oracle_correlation"])


def test_stats_on_small_dataset_and_table():
    rng = np.random.default_rng(1)
    d = NeuralDataset(
        train_images=rng.random((20, 8, 8)), train_responses=np.array([[0.0, 2.0]] * 10 + [[1.0, 0.0]] * 10),
        test_images=rng.random((5, 8, 8)), test_responses=rng.poisson(1.0, (3, 5, 2)).astype(float), name="tiny",
    )
    s = stats(d)
    assert s["mean_response"] == pytest.approx(0.75)
    assert s["frac_zeros"] == pytest.approx(0.5)
    assert s["n_neurons"] == 2 and s["n_train"] == 20 and s["n_test"] == 5 and s["n_repeats"] == 3
    table = format_stats([s], [dict(mean_response=0.5, frac_zeros=0.5)])
    lines = table.splitlines()
    assert lines[0].split()[0] == "dataset" and "oracle" in lines[0]
    assert lines[2].startswith("tiny") and "0.750" in lines[2]
    assert "+50%" in lines[3]
