"""The simulator's ground truth as a function of any model image (daenr_fast.data.ground_truth)."""
import json

import numpy as np
import pytest
import torch

from daenr_fast.data import GroundTruth, NeuralDataset, ground_truth_for, prepare, save_npz
from daenr_fast.data.neurons import gaussianize, normal_scores


@pytest.fixture(scope="module")
def region2(sim_regions):
    return sim_regions[2], ground_truth_for("sim:region2")


def test_stored_rates_are_the_ground_truth_of_the_prepared_images(region2):
    dataset, truth = region2
    splits = prepare(dataset)
    gt = splits.ground_truth
    for split, key in (("train", "train_rates"), ("val", "val_rates"), ("test", "test_rates")):
        images = splits.tensors(split)[0]
        np.testing.assert_allclose(truth.rates(images), gt[key], rtol=1e-5, err_msg=split)
    assert truth.rates(splits.test.images).shape == (50, 55)
    assert truth.spec == "sim:region2:seed=0" and truth.n_neurons == dataset.n_neurons


def test_model_images_are_what_prepare_gives(region2):
    dataset, truth = region2
    np.testing.assert_array_equal(truth.model_images(dataset.test_images), prepare(dataset).test.images[:, 0].numpy())


def test_deterministic_and_vectorised(region2):
    dataset, truth = region2
    x = truth.model_images(dataset.test_images[:7])
    again = ground_truth_for("sim:region2:seed=0")
    np.testing.assert_array_equal(again.rates(x), truth.rates(x))
    one_by_one = np.concatenate([truth.rates(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(truth.rates(x), one_by_one, rtol=1e-12)
    np.testing.assert_allclose(truth.rates(torch.as_tensor(x)[:, None]), truth.rates(x), rtol=1e-12)
    other = ground_truth_for("sim:region2:seed=1")
    assert not np.allclose(other.rates(x), truth.rates(x))


def test_rates_extend_monotonically_beyond_the_training_images(region2):
    dataset, truth = region2
    pop = truth.population
    x = truth.model_images(dataset.test_images[:5])
    contrasts = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 16.0, 64.0])
    r = np.stack([truth.rates(c * x) for c in contrasts])  # (contrasts, images, neurons)
    assert np.isfinite(r).all() and (r > 0).all()
    drive = np.stack([truth.drive(c * x) for c in contrasts])
    simple, stopped = ~pop.complex_cell, pop.end_stopped
    up = drive[-1] > 0
    steps = np.diff(r, axis=0)
    assert (steps[..., pop.complex_cell] > 0).all()  # energy grows with contrast, so does the rate
    assert (steps[:, up & simple] > 0).all() and (steps[:, ~up & simple] < 0).all()
    # Gabor and energy drives are homogeneous in contrast; end-stopped drives saturate (D -> E / S)
    np.testing.assert_allclose(drive[-1][:, ~stopped], 4 * drive[-2][:, ~stopped], rtol=1e-9)
    ratio = np.abs(drive[-1][:, stopped]) / np.abs(drive[-2][:, stopped])  # 4 (sigma + 16 S) / (sigma + 64 S)
    assert (ratio < 4).all() and np.median(ratio) < 1.5
    plain = simple & ~stopped
    assert r[-1][:, plain].max() > dataset.ground_truth["train_rates"][:, plain].max()  # beyond every training rate


def test_gaussianize_interpolates_the_reference_quantiles_and_extrapolates_linearly():
    rng = np.random.default_rng(0)
    reference = rng.gamma(2.0, size=(400, 3))
    z = gaussianize(reference, reference)
    order = np.argsort(reference, axis=0)
    np.testing.assert_allclose(np.take_along_axis(z, order, axis=0), np.tile(normal_scores(400)[:, None], (1, 3)))
    lo, hi = reference.min(0), reference.max(0)
    eps = 1e-9
    at = gaussianize(np.stack([lo - eps, lo, hi, hi + eps]), reference)
    np.testing.assert_allclose(at[0], at[1], atol=1e-6)
    np.testing.assert_allclose(at[2], at[3], atol=1e-6)
    far = gaussianize(np.stack([hi + 1.0, hi + 2.0, hi + 3.0]), reference)
    np.testing.assert_allclose(far[2] - far[1], far[1] - far[0], rtol=1e-9)  # linear beyond the end
    assert (far[0] > at[3]).all()
    with pytest.raises(ValueError, match="reference"):
        gaussianize(reference[:1], reference[:1])


def test_save_load_subset_and_run_folder(region2, tmp_path):
    dataset, truth = region2
    x = truth.model_images(dataset.test_images[:4])
    loaded = GroundTruth.load(truth.save(tmp_path / "gt.npz"))
    np.testing.assert_array_equal(loaded.rates(x), truth.rates(x))
    assert loaded.spec == truth.spec and loaded.intensity_range == truth.intensity_range
    sub = truth.subset([3, 0])
    np.testing.assert_allclose(sub.rates(x), truth.rates(x)[:, [3, 0]], rtol=1e-12)
    np.testing.assert_array_equal(sub.neurons, [3, 0])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "cnn-fr", "data": "sim:region2"}))
    np.testing.assert_array_equal(GroundTruth.from_run(run).rates(x), truth.rates(x))
    sub.save(run / "ground_truth.npz")
    np.testing.assert_allclose(GroundTruth.from_run(run).rates(x), sub.rates(x), rtol=1e-12)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        GroundTruth.from_run(tmp_path)
    with pytest.raises(ValueError, match="subset|index"):
        truth.subset([55])


def test_npz_written_by_the_simulator_and_recordings(region2, tmp_path):
    dataset, truth = region2
    path = save_npz(dataset, tmp_path / "sim.npz")
    x = truth.model_images(dataset.test_images[:3])
    np.testing.assert_array_equal(ground_truth_for(path).rates(x), truth.rates(x))
    damaged = NeuralDataset(**{k: v for k, v in dataset.arrays().items()}, meta=dataset.meta, name=dataset.name,
                            ground_truth={"test_rates": dataset.ground_truth["test_rates"] * 1.5})
    with pytest.raises(ValueError, match="another simulator version"):
        ground_truth_for(save_npz(damaged, tmp_path / "other.npz"))
    recording = NeuralDataset(**{k: v for k, v in dataset.arrays().items()}, meta={"source": "lab"}, name="rec")
    rec_path = save_npz(recording, tmp_path / "rec.npz")
    assert ground_truth_for(rec_path) is None
    with pytest.raises(ValueError, match="not simulated"):
        GroundTruth.from_spec(rec_path)
    with pytest.raises(ValueError, match="malformed"):
        ground_truth_for("sim:regionX")


@pytest.mark.parametrize("images,error,match", [
    (np.zeros((2, 31, 31)), ValueError, r"\(N, 32, 32\).*\(2, 31, 31\)"),
    (np.zeros((32, 32)), ValueError, "shape"),
    (np.full((1, 32, 32), np.nan), ValueError, "finite"),
    (np.zeros((1, 32, 32), dtype=complex), TypeError, "real"),
])
def test_bad_images(region2, images, error, match):
    with pytest.raises(error, match=match):
        region2[1].rates(images)
