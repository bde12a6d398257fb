import numpy as np
import pytest

from daenr_fast.cli import main
from daenr_fast.data import load, load_npz


def test_simulate_writes_npz_with_ground_truth(tmp_path, capsys):
    out = tmp_path / "region2.npz"
    assert main(["simulate", "--region", "2", "--seed", "0", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    d = load_npz(out)
    assert d.n_neurons == 55 and d.ground_truth["test_rates"].shape == (50, 55)
    np.testing.assert_array_equal(d.train_responses, load("sim:region2").train_responses)


def test_data_stats_on_npz_antolik_folder_and_sim(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "region1"
    folder.mkdir()
    np.save(folder / "training_inputs.npy", rng.random((20, 961)))
    np.save(folder / "training_set.npy", rng.poisson(0.6, (20, 3)).astype(float))
    np.save(folder / "validation_inputs.npy", rng.random((5, 961)))
    np.save(folder / "raw_validation_set.npy", rng.poisson(0.6, (4, 5, 3)).astype(float))
    npz = tmp_path / "mine.npz"
    np.savez(npz, train_images=rng.random((8, 6, 6)), train_responses=rng.poisson(1, (8, 2)),
             test_images=rng.random((3, 6, 6)), test_responses=rng.poisson(1, (2, 3, 2)))
    assert main(["data-stats", str(folder), f"antolik:{folder}", str(npz), "sim:region2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines[2:]]
    assert names == ["region1", "region1", "mine", "sim-region2", "target"]
    assert "0.61 (" in lines[-1]


@pytest.mark.parametrize("spec,pattern", [
    ("region9", "accepted forms"), ("sim:region4", "region must be one of"), ("sim:r3", "accepted forms"),
])
def test_bad_specs_exit_2(spec, pattern, capsys):
    assert main(["data-stats", spec]) == 2
    assert pattern in capsys.readouterr().err


def test_missing_npz_exits_2(tmp_path, capsys):
    assert main(["data-stats", str(tmp_path / "gone.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_simulate_rejects_non_npz(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x.txt")]) == 2
    assert ".npz" in capsys.readouterr().err


def test_data_stats_on_the_real_test_only_folders(real_dir, capsys):
    assert main(["data-stats", str(real_dir / "region1"), f"antolik:{real_dir / 'region3'}", "sim:region3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[-6:] == ["contrast", "slope", "I", "mean", "I", "std"]
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["region1"][1:3] == ["103", "1800"] and rows["region3"][1:3] == ["102", "1800"]
    # contrast, slope, intensity mean and std of the real test images (the region targets, printed to 3 decimals)
    assert rows["region1"][-4:] == ["0.617", "-2.491", "0.447", "0.296"]
    assert rows["region3"][-4:] == ["0.531", "-2.314", "0.494", "0.265"]
    target = lines[5]
    assert target.split()[0] == "target" and "-2.31 (" in target and "0.53 (" in target
    assert "region3: no training images (training_inputs.npy missing): test split only" in out
