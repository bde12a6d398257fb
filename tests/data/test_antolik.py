import numpy as np
import pytest

from daenr_fast.data import NeuralDataset, load, load_antolik, prepare


def write_region(folder, n=12, t=5, reps=3, neurons=4, side=31, seed=0):
    """Write a tiny region in exactly the Antolik et al. 2016 layout; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "training_inputs.npy": rng.random((n, side * side)),
        "training_set.npy": rng.random((n, neurons)),
        "validation_inputs.npy": rng.random((t, side * side)),
        "raw_validation_set.npy": rng.random((reps, t, neurons)),
    }
    for name, value in arrays.items():
        np.save(folder / name, value)
    return arrays


def test_load_region_folder(tmp_path):
    arrays = write_region(tmp_path / "region3")
    d = load_antolik(tmp_path / "region3")
    assert d.name == "region3" and d.n_neurons == 4
    assert d.train_images.shape == (12, 31, 31) and d.test_images.shape == (5, 31, 31)
    assert d.test_responses.shape == (3, 5, 4)
    np.testing.assert_allclose(d.train_images.reshape(12, -1), arrays["training_inputs.npy"], rtol=1e-6)
    np.testing.assert_allclose(d.test_responses, arrays["raw_validation_set.npy"], rtol=1e-6)
    assert d.ground_truth is None and d.meta["source"] == "antolik2016"


def test_load_via_spec(tmp_path):
    write_region(tmp_path / "region1")
    assert load(f"antolik:{tmp_path / 'region1'}").n_neurons == 4


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_antolik(tmp_path / "nope")
    write_region(tmp_path / "region2")
    (tmp_path / "region2" / "raw_validation_set.npy").unlink()
    with pytest.raises(ValueError, match=r"raw_validation_set\.npy \[test_responses\]: missing file"):
        load_antolik(tmp_path / "region2")


def test_non_square_flattened_images(tmp_path):
    write_region(tmp_path / "region1")
    np.save(tmp_path / "region1" / "training_inputs.npy", np.zeros((12, 960)))
    with pytest.raises(ValueError, match=r"training_inputs\.npy \[train_images\].*perfect square.*960"):
        load_antolik(tmp_path / "region1")


def test_real_region_folder_without_training_images_loads_its_test_split(real_dir):
    folder = real_dir / "region3"
    with pytest.warns(UserWarning, match=r"training_inputs\.npy \[train_images\]: missing file: loaded the test split"):
        d = load_antolik(folder)
    assert d.test_only and d.train_images is None and d.meta["missing"] == ["training_inputs.npy"]
    assert d.n_neurons == 102 and d.test_images.shape == (50, 31, 31) and d.test_responses.shape == (12, 50, 102)
    assert d.train_responses.shape == (1800, 102)
    raw = np.load(folder / "validation_inputs.npy")
    np.testing.assert_allclose(d.test_images.reshape(50, -1), raw, rtol=1e-6)
    assert "test only" in repr(d)
    splits = prepare(d)
    lo, hi = splits.intensity_range  # the resized test images' own range
    assert splits.test_only and lo == 0.0 and 2.5e-4 < hi <= 2.55e-4
    images, mean = splits.tensors("test")
    assert images.shape == (50, 1, 32, 32) and float(images.min()) == -1.0 and float(images.max()) == 1.0
    np.testing.assert_allclose(mean.numpy(), np.load(folder / "raw_validation_set.npy").mean(0), rtol=1e-5)
    for split in ("train", "val"):
        with pytest.raises(ValueError, match=r"training_inputs\.npy \[train_images\].*test split only.*evaluated"):
            splits.tensors(split)


def test_test_only_folder_still_needs_its_test_files(tmp_path):
    write_region(tmp_path / "region1")
    (tmp_path / "region1" / "training_inputs.npy").unlink()
    (tmp_path / "region1" / "training_set.npy").unlink()
    with pytest.warns(UserWarning, match="test split only"):
        d = load_antolik(tmp_path / "region1")
    assert d.test_only and d.train_responses is None and d.n_neurons == 4
    (tmp_path / "region1" / "validation_inputs.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"validation_inputs\.npy \[test_images\]: missing file"):
        load_antolik(tmp_path / "region1")


def test_test_only_dataset_refuses_training_arrays():
    rng = np.random.default_rng(0)
    test = dict(test_images=rng.random((3, 8, 8)), test_responses=rng.random((2, 3, 4)))
    with pytest.raises(ValueError, match=r"\[train_images\]: expected no such array in a test-only dataset"):
        NeuralDataset(train_images=rng.random((3, 8, 8)), **test, test_only=True)
    with pytest.raises(ValueError, match=r"\[train_responses\]: expected 4 neurons as in 'test_responses'"):
        NeuralDataset(train_responses=rng.random((5, 3)), **test, test_only=True)
    with pytest.raises(ValueError, match=r"\[train_images\]: expected this required array"):
        NeuralDataset(**test)
