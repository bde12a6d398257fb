import numpy as np
import pytest

from daenr_fast.data import REGIONS, NeuralDataset, simulate

SIZES = {1: (103, 1800, 10), 2: (55, 1260, 8), 3: (102, 1800, 12)}


@pytest.mark.parametrize("region", [1, 2, 3])
def test_shapes_match_table7(sim_regions, region):
    d = sim_regions[region]
    n, n_train, reps = SIZES[region]
    assert isinstance(d, NeuralDataset)
    assert d.n_neurons == n
    assert d.train_images.shape == (n_train, 31, 31) and d.train_images.dtype == np.float32
    assert d.train_responses.shape == (n_train, n) and d.train_responses.dtype == np.float32
    assert d.test_images.shape == (50, 31, 31)
    assert d.test_responses.shape == (reps, 50, n)
    assert d.neuron_ids.shape == (n,)
    gt = d.ground_truth
    assert gt["train_rates"].shape == (n_train, n) and gt["test_rates"].shape == (50, n)
    assert gt["rf_centers"].shape == (n, 2) and gt["cell_types"].shape == (n,)
    assert gt["rf_envelopes"].shape == (n, 32, 32)
    assert d.name == f"sim-region{region}" and d.meta["region"] == region


def test_responses_are_poisson_counts_and_images_in_unit_range(sim_regions):
    d = sim_regions[3]
    for r in (d.train_responses, d.test_responses):
        assert r.min() >= 0 and np.array_equal(r, np.round(r))
    assert d.train_images.min() >= 0 and d.train_images.max() <= 1
    assert d.train_images.std(axis=(1, 2)).min() > 0


def test_deterministic_per_seed(sim_regions):
    again = simulate(region=2, seed=0)
    ref = sim_regions[2]
    for key, value in ref.arrays().items():
        np.testing.assert_array_equal(getattr(again, key), value, err_msg=key)
    np.testing.assert_array_equal(again.ground_truth["test_rates"], ref.ground_truth["test_rates"])
    other = simulate(region=2, seed=1)
    assert not np.array_equal(other.train_images, ref.train_images)
    assert not np.array_equal(other.train_responses, ref.train_responses)


def test_train_and_test_patches_differ(sim_regions):
    d = sim_regions[1]
    train = d.train_images.reshape(len(d.train_images), -1)
    test = d.test_images.reshape(len(d.test_images), -1)
    dist = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    assert dist.min() > 0


def test_noise_free_rates_explain_trial_average(sim_regions):
    for region, d in sim_regions.items():
        gt = d.ground_truth
        mean = d.test_responses.mean(axis=0)
        corr = [np.corrcoef(gt["test_rates"][:, j], mean[:, j])[0, 1] for j in range(d.n_neurons)]
        assert np.median(corr) > 0.6, region
        # every neuron's mean count matches its mean rate
        np.testing.assert_allclose(d.train_responses.mean(0), gt["train_rates"].mean(0), atol=0.15)
        assert abs(d.train_responses.mean() - gt["train_rates"].mean()) < 0.02


def test_rf_centres_clustered_inside_the_image(sim_regions):
    centres = {}
    for region, d in sim_regions.items():
        c = d.ground_truth["rf_centers"]
        assert (c >= 3).all() and (c <= 28).all()
        spread = c.std(axis=0)
        assert (spread < 4.5).all() and (spread > 1.0).all()
        centres[region] = c.mean(axis=0)
        expected = (np.asarray(REGIONS[region].center) + 0.5) * 32 / 31 - 0.5
        np.testing.assert_allclose(centres[region], expected, atol=1.0)
    assert np.linalg.norm(centres[1] - centres[2]) > 2.0


@pytest.mark.parametrize("region", [1, 2, 3])
def test_cell_types_present(sim_regions, region):
    gt = sim_regions[region].ground_truth
    types = set(gt["cell_types"])
    stopped = {"simple-end-stopped", "complex-end-stopped"}
    fraction = REGIONS[region].end_stopped_fraction
    assert types == (stopped if fraction == 1 else stopped | {"simple", "complex"})
    assert np.mean(np.isfinite(gt["norm_sigma"])) == pytest.approx(fraction, abs=0.15)


@pytest.mark.parametrize("region,seed", [(4, 0), (0, 0), (1, -1), (1, 1.5)])
def test_bad_arguments(region, seed):
    with pytest.raises(ValueError):
        simulate(region=region, seed=seed)
