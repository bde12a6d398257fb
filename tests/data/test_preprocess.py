import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from daenr_fast.data import NeuralDataset, prepare


def test_shapes_range_and_split(sim_regions):
    d = sim_regions[2]
    s = prepare(d, val_fraction=0.2, seed=0)
    x, y = s.tensors("train")
    xv, yv = s.tensors("val")
    xt, yt = s.tensors("test")
    assert x.shape == (1008, 1, 32, 32) and y.shape == (1008, 55) and x.dtype == torch.float32
    assert xv.shape == (252, 1, 32, 32) and xt.shape == (50, 1, 32, 32)
    assert x.min() == -1 and x.max() == 1 and xt.min() >= -1 and xt.max() <= 1
    assert s.n_neurons == 55 and s.test_trials.shape == (8, 50, 55)
    torch.testing.assert_close(s.test_mean, s.test_trials.mean(0))
    torch.testing.assert_close(yt, s.test_mean)
    assert len(np.intersect1d(s.train_index, s.val_index)) == 0
    assert len(s.train_index) + len(s.val_index) == 1260
    torch.testing.assert_close(yv, torch.as_tensor(d.train_responses[s.val_index]))
    image, response = s.train[0]
    assert image.shape == (1, 32, 32) and response.shape == (55,)
    gt = s.ground_truth
    np.testing.assert_array_equal(gt["val_rates"], d.ground_truth["train_rates"][s.val_index])
    assert gt["train_rates"].shape == (1008, 55) and gt["test_rates"].shape == (50, 55)


def test_split_is_seeded(sim_regions):
    a = prepare(sim_regions[2], seed=0)
    b = prepare(sim_regions[2], seed=0)
    c = prepare(sim_regions[2], seed=1)
    np.testing.assert_array_equal(a.val_index, b.val_index)
    assert not np.array_equal(a.val_index, c.val_index)


def test_intensity_mapping_uses_train_min_max_and_clips():
    train = np.stack([np.full((31, 31), 10.0), np.full((31, 31), 20.0)])
    test = np.stack([np.full((31, 31), 15.0), np.full((31, 31), 30.0), np.full((31, 31), 0.0)])
    d = NeuralDataset(train_images=train, train_responses=np.ones((2, 1)), test_images=test,
                      test_responses=np.ones((1, 3, 1)))
    s = prepare(d, val_fraction=0.0)
    assert s.intensity_range == (10.0, 20.0)
    xt = s.tensors("test")[0]
    np.testing.assert_allclose(xt[:, 0, 0, 0].numpy(), [0.0, 1.0, -1.0])
    assert len(s.val) == 0


def test_resize_keeps_structure():
    col = np.linspace(0, 1, 31, dtype=np.float32)
    d = NeuralDataset(train_images=np.broadcast_to(col, (3, 31, 31)), train_responses=np.ones((3, 1)),
                      test_images=np.broadcast_to(col, (1, 31, 31)), test_responses=np.ones((1, 1, 1)))
    x = prepare(d, val_fraction=0.0).tensors("train")[0][0, 0].numpy()
    assert np.all(np.diff(x[5]) > 0) and np.allclose(x[:, 7], x[0, 7])
    np.testing.assert_allclose(x[:, 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(x[:, -1], 1.0, atol=1e-6)


def test_dataset_with_own_validation_set():
    rng = np.random.default_rng(0)
    d = NeuralDataset(train_images=rng.random((10, 31, 31)), train_responses=rng.random((10, 2)),
                      val_images=rng.random((3, 31, 31)), val_responses=rng.random((3, 2)),
                      test_images=rng.random((2, 31, 31)), test_responses=rng.random((4, 2, 2)))
    s = prepare(d, val_fraction=0.5)
    assert len(s.train) == 10 and len(s.val) == 3 and s.val_index is None


def test_dataloader_batches(sim_regions):
    s = prepare(sim_regions[2])
    images, responses = next(iter(DataLoader(s.train, batch_size=16, shuffle=True)))
    assert images.shape == (16, 1, 32, 32) and responses.shape == (16, 55)


def test_rf_centres_follow_other_sizes(sim_regions):
    s = prepare(sim_regions[2], size=64)
    assert s.tensors("train")[0].shape[-1] == 64
    np.testing.assert_allclose(s.ground_truth["rf_centers"],
                               (sim_regions[2].ground_truth["rf_centers"] + 0.5) * 2 - 0.5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(val_fraction=1.0), dict(val_fraction=-0.1), dict(size=1)])
def test_bad_arguments(sim_regions, kwargs):
    with pytest.raises(ValueError):
        prepare(sim_regions[2], **kwargs)


def test_unknown_split(sim_regions):
    with pytest.raises(ValueError, match="split must be one of"):
        prepare(sim_regions[2]).tensors("validation")
