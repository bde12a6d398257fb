import numpy as np
import pytest

from daenr_fast.data import load, load_antolik


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
