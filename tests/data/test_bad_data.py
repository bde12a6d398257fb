"""Every bad-data rule raises a ValueError naming the file, the key and the expectation (real files on disk)."""
import re
import warnings

import numpy as np
import pytest

from daenr_fast.data import DataError, load_antolik, load_npz


def good_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        train_images=rng.random((6, 5, 5)), train_responses=rng.poisson(1.0, (6, 3)).astype(float),
        test_images=rng.random((4, 5, 5)), test_responses=rng.poisson(1.0, (2, 4, 3)).astype(float),
    )


def write(tmp_path, **changes):
    arrays = good_arrays()
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def expect_error(path, key, pattern):
    with pytest.raises(DataError) as info:
        load_npz(path)
    message = str(info.value)
    assert message.startswith(f"{path} [{key}]: expected"), message
    assert isinstance(info.value, ValueError)
    assert re.search(pattern, message), message


def test_good_file_loads(tmp_path):
    assert load_npz(write(tmp_path)).n_neurons == 3


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file") as info:
        load_npz(tmp_path / "absent.npz")
    assert isinstance(info.value, FileNotFoundError) and "absent.npz" in str(info.value)


def test_not_an_npz_archive(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("not a zip")
    expect_error(str(path), "*", "numpy.savez")


def test_missing_key(tmp_path):
    expect_error(write(tmp_path, test_responses=None), "test_responses", "required keys")


def test_wrong_response_shape(tmp_path):
    expect_error(write(tmp_path, train_responses=np.ones(6)), "train_responses", r"2-D array \(N, neurons\)")


def test_test_responses_without_repeat_axis(tmp_path):
    expect_error(write(tmp_path, test_responses=np.ones((4, 3))), "test_responses", r"repeat axis")


def test_image_response_count_mismatch(tmp_path):
    expect_error(write(tmp_path, train_responses=np.ones((5, 3))), "train_responses", r"one response row per image.*6 images")


def test_test_count_mismatch(tmp_path):
    expect_error(write(tmp_path, test_responses=np.ones((2, 3, 3))), "test_responses", r"4 images.*3 rows")


def test_neuron_count_mismatch(tmp_path):
    expect_error(write(tmp_path, test_responses=np.ones((2, 4, 2))), "test_responses", r"3 neurons")


def test_image_size_mismatch(tmp_path):
    expect_error(write(tmp_path, test_images=np.ones((4, 6, 6))), "test_images", r"size \(5, 5\)")


def test_nan(tmp_path):
    bad = good_arrays()["train_images"]
    bad[2, 1, 3] = np.nan
    expect_error(write(tmp_path, train_images=bad), "train_images", r"finite.*nan at index \(2, 1, 3\)")


def test_inf(tmp_path):
    bad = good_arrays()["test_responses"]
    bad[1, 0, 2] = np.inf
    expect_error(write(tmp_path, test_responses=bad), "test_responses", r"finite.*inf")


def test_zero_neurons(tmp_path):
    expect_error(write(tmp_path, train_responses=np.ones((6, 0)), test_responses=np.ones((2, 4, 0))),
                 "train_responses", "at least one neuron")


def test_images_not_2d(tmp_path):
    expect_error(write(tmp_path, train_images=np.ones((6, 5, 5, 3))), "train_images", r"stack of 2-D grayscale")


def test_flat_images(tmp_path):
    expect_error(write(tmp_path, test_images=np.ones((4, 25))), "test_images", r"3-D array")


def test_no_images(tmp_path):
    expect_error(write(tmp_path, train_images=np.ones((0, 5, 5)), train_responses=np.ones((0, 3))),
                 "train_images", "at least one train image")


def test_non_numeric(tmp_path):
    expect_error(write(tmp_path, train_responses=np.array([["a"] * 3] * 6)), "train_responses", "numeric")


def test_val_images_without_val_responses(tmp_path):
    expect_error(write(tmp_path, val_images=np.ones((2, 5, 5))), "val_responses", "together with 'val_images'")


def test_neuron_ids_length(tmp_path):
    expect_error(write(tmp_path, neuron_ids=np.arange(4)), "neuron_ids", r"shape \(3,\)")


def test_meta_not_json(tmp_path):
    expect_error(write(tmp_path, meta=np.array("{oops")), "meta", "JSON")


def test_antolik_error_names_the_file(tmp_path):
    folder = tmp_path / "region1"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "training_inputs.npy", rng.random((6, 961)))
    np.save(folder / "training_set.npy", rng.random((7, 3)))
    np.save(folder / "validation_inputs.npy", rng.random((4, 961)))
    np.save(folder / "raw_validation_set.npy", rng.random((2, 4, 3)))
    with pytest.raises(ValueError, match=r"training_set\.npy \[train_responses\]: expected one response row"):
        load_antolik(folder)


def test_negative_responses_warn_but_load(tmp_path):
    arrays = good_arrays()
    arrays["train_responses"][0, 0] = -0.5
    path = write(tmp_path, train_responses=arrays["train_responses"])
    with pytest.warns(UserWarning, match=r"\[train_responses\]: 1 negative responses.*not valid Poisson targets"):
        d = load_npz(path)
    assert d.train_responses[0, 0] == pytest.approx(-0.5)


def test_nonnegative_responses_do_not_warn(tmp_path):
    path = write(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_npz(path)
