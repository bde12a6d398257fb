import json

import numpy as np

from daenr_fast.data import NeuralDataset, load, load_npz, save_npz


def test_round_trip_simulated(sim_regions, tmp_path):
    d = sim_regions[2]
    path = save_npz(d, tmp_path / "region2.npz")
    back = load_npz(path)
    for key, value in d.arrays().items():
        np.testing.assert_array_equal(getattr(back, key), value, err_msg=key)
    assert set(back.ground_truth) == set(d.ground_truth)
    for key, value in d.ground_truth.items():
        np.testing.assert_array_equal(back.ground_truth[key], value, err_msg=key)
    assert back.meta == d.meta and back.name == d.name
    assert load(str(path)).n_neurons == d.n_neurons


def test_round_trip_with_val_and_string_ids(tmp_path):
    rng = np.random.default_rng(0)
    d = NeuralDataset(
        train_images=rng.random((6, 5, 7)), train_responses=rng.random((6, 3)),
        val_images=rng.random((2, 5, 7)), val_responses=rng.random((2, 3)),
        test_images=rng.random((4, 5, 7)), test_responses=rng.random((1, 4, 3)),
        neuron_ids=np.array(["a", "b", "c"]), meta={"lab": "x", "rate_hz": 30}, name="mine",
    )
    back = load_npz(save_npz(d, tmp_path / "sub" / "mine.npz"))
    np.testing.assert_array_equal(back.val_images, d.val_images)
    assert list(back.neuron_ids) == ["a", "b", "c"]
    assert back.meta == {"lab": "x", "rate_hz": 30} and back.ground_truth is None and back.name == "mine"


def test_written_file_has_documented_keys(tmp_path, sim_regions):
    path = save_npz(sim_regions[2], tmp_path / "r.npz")
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        assert {"train_images", "train_responses", "test_images", "test_responses", "neuron_ids", "meta",
                "gt_train_rates", "gt_test_rates", "gt_rf_centers", "gt_cell_types"} <= keys
        assert json.loads(str(f["meta"]))["region"] == 2


def test_minimal_user_file_without_optional_keys(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "user.npz"
    np.savez(path, train_images=rng.random((4, 6, 6)), train_responses=rng.poisson(1, (4, 2)),
             test_images=rng.random((3, 6, 6)), test_responses=rng.poisson(1, (2, 3, 2)))
    d = load_npz(path)
    assert d.name == "user" and d.meta == {} and d.val_images is None
    np.testing.assert_array_equal(d.neuron_ids, [0, 1])
