"""Nothing silently wrong with data: values that overflow float32, corrupted archive members, unreadable .npy
files and data that preprocessing turns degenerate are DataErrors naming the file and the key, and ``daenr
train`` stops on them in one line before training."""
import io
import re
import zipfile

import numpy as np
import pytest

from daenr_fast.cli import main
from daenr_fast.data import DataError, NeuralDataset, load_antolik, load_npz, prepare
from daenr_fast.train import TrainConfig, train


def arrays(seed=0, n_train=40, n_test=6, size=8, n_neurons=3):
    rng = np.random.default_rng(seed)
    return dict(train_images=rng.random((n_train, size, size)),
                train_responses=rng.poisson(2.0, (n_train, n_neurons)).astype(np.float64),
                test_images=rng.random((n_test, size, size)),
                test_responses=rng.poisson(2.0, (2, n_test, n_neurons)).astype(np.float64))


def write_npz(path, compress=False, **changes):
    values = {**arrays(), **changes}
    (np.savez_compressed if compress else np.savez)(path, **values)
    return str(path)


def expect(path, key, pattern, loader=load_npz):
    with pytest.raises(DataError, match=pattern) as info:
        loader(path)
    assert str(info.value).startswith(f"{path} [{key}]: expected"), str(info.value)


# ------------------------------------------------------------------------------------------- float32 overflow
@pytest.mark.parametrize("key,index", [("train_images", (3, 2, 1)), ("test_responses", (1, 0, 2))])
def test_float64_value_beyond_float32_is_refused(tmp_path, key, index):
    bad = arrays()[key]
    bad[index] = 1e39
    path = write_npz(tmp_path / "data.npz", **{key: bad})
    expect(path, key, r"values that fit in float32 \(\|x\| <= 3\.403e\+38\), got 1e\+39 at index "
           + re.escape(str(index)))


def test_largest_float32_value_is_accepted(tmp_path):
    images = arrays()["train_images"]
    images[0, 0, 0] = float(np.finfo(np.float32).max)
    assert load_npz(write_npz(tmp_path / "data.npz", train_images=images)).train_images.max() < np.inf


# ------------------------------------------------------------------------------------------ corrupted archives
def _corrupt_member(path, member):
    """Zero 64 bytes in the middle of ``member``'s stored data (the zip's central directory stays intact)."""
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo(member)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    data[start:start + 64] = bytes(64)
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "deflated"])
@pytest.mark.parametrize("key", ["train_images", "gt_test_rates"])
def test_corrupted_member_names_file_and_key(tmp_path, compress, key):
    extra = {"gt_test_rates": np.random.default_rng(1).random((6, 3))}
    path = write_npz(tmp_path / "data.npz", compress=compress, **extra)
    _corrupt_member(path, f"{key}.npy")
    expect(path, key, r"an intact archive member, got a corrupted one \((BadZipFile|error): .*write or copy it again")


def test_truncated_npz_names_the_file(tmp_path):
    path = write_npz(tmp_path / "data.npz")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    expect(path, "*", "not a zip archive")


# ----------------------------------------------------------------------------------------------- Antolik .npy
def antolik_folder(tmp_path, **changes):
    rng = np.random.default_rng(0)
    folder = tmp_path / "region1"
    folder.mkdir()
    files = {"training_inputs.npy": rng.random((8, 961)), "training_set.npy": rng.poisson(1.0, (8, 3)) * 1.0,
             "validation_inputs.npy": rng.random((4, 961)), "raw_validation_set.npy": rng.poisson(1.0, (2, 4, 3)) * 1.0}
    for name, value in files.items():
        np.save(folder / name, value)
    for name, spoil in changes.items():
        path = folder / name
        path.write_bytes(spoil(path.read_bytes()))
    return folder


@pytest.mark.parametrize("spoil,pattern", [
    (lambda b: b"", "got a file that is not in the .npy format"),
    (lambda b: b[:len(b) // 2], r"got an unreadable file \(ValueError: Failed to read all data"),
    (lambda b: b[:30], r"got an unreadable file \(ValueError: EOF: reading array header"),
    (lambda b: np.random.default_rng(2).bytes(len(b)), "got a file that is not in the .npy format"),
])
def test_unreadable_antolik_file_names_file_and_key(tmp_path, spoil, pattern):
    folder = antolik_folder(tmp_path, **{"training_set.npy": spoil})
    with pytest.raises(DataError, match=pattern) as info:
        load_antolik(folder)
    assert str(info.value).startswith(f"{folder / 'training_set.npy'} [train_responses]: expected a .npy file")


def test_antolik_float64_beyond_float32_is_refused(tmp_path):
    folder = antolik_folder(tmp_path)
    values = np.random.default_rng(0).random((4, 961))
    values[2, 5] = -1e39
    np.save(folder / "validation_inputs.npy", values)
    with pytest.raises(DataError, match=r"validation_inputs\.npy \[test_images\]: expected values that fit in "
                                         r"float32 .*got -1e\+39 at index \(2, 0, 5\)"):
        load_antolik(folder)


# ------------------------------------------------------------------------------------- degenerate after prepare
def dataset(**changes):
    return NeuralDataset(**{**arrays(), **changes}, sources={k: "mine.npz" for k in arrays()})


def test_constant_training_images_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"^mine\.npz \[train_images\]: expected images that are not all one value, "
                                        r"got every pixel = 0\.5"):
        prepare(dataset(train_images=np.full((40, 8, 8), 0.5)))


def test_test_images_all_clipped_to_one_value(tmp_path):
    with pytest.raises(DataError, match=r"^mine\.npz \[test_images\]: expected images that still vary after "
                                        r"preprocessing .*got every pixel = 1 \(an outlier"):
        prepare(dataset(test_images=np.full((6, 8, 8), 7.0)))


def test_own_validation_images_constant():
    with pytest.raises(DataError, match=r"\[val_images\]: expected images that still vary"):
        prepare(dataset(val_images=np.zeros((5, 8, 8)) - 3, val_responses=np.ones((5, 3))))


def test_intensity_range_too_wide_for_float32_is_not_finite_after_preprocessing():
    images = arrays()["train_images"].astype(np.float32)
    images[0, 0, 0], images[1, 0, 0] = 3e38, -3e38
    with pytest.raises(DataError, match=r"\[train_images\]: expected finite values after preprocessing, got NaN or "
                                        r"inf: the training intensity range \[-3e\+38, 3e\+38\] is too wide"):
        prepare(dataset(train_images=images))


QUICK = dict(batch_size=8, eval_every=2, max_steps=2, progress=False, figures=False)


@pytest.mark.parametrize("key", ["train_responses", "test_responses"])
def test_constant_responses_stop_a_readout_model_before_training(key, single_thread):
    values = np.zeros_like(arrays()[key])
    splits = prepare(dataset(**{key: values}))
    steps = []
    with pytest.raises(DataError, match=rf"^mine\.npz \[{key}\]: expected responses that vary .*= 0"):
        train(TrainConfig(model="cnn-fr", layer=2, **QUICK), splits, on_step=lambda t: steps.append(1))
    assert steps == []


def test_constant_responses_are_fine_for_an_autoencoder(single_thread):
    splits = prepare(dataset(train_responses=np.zeros((40, 3))))
    assert train(TrainConfig(model="cae", layer=2, **QUICK), splits).metrics["run"]["steps"] == 2


# ----------------------------------------------------------------------------------------------- via daenr train
def _train_cli(path, out, capsys):
    code = main(["train", "--data", str(path), "--out", str(out), "--model", "cnn-fr", "--max-steps", "2",
                 "--batch-size", "8", "--no-progress", "--no-figures"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    return code, lines


def test_train_on_overflowing_values_exits_2_in_one_line(tmp_path, capsys):
    images = arrays()["train_images"]
    images[0, 1, 2] = 1e39
    path = write_npz(tmp_path / "data.npz", train_images=images)
    code, lines = _train_cli(path, tmp_path / "run", capsys)
    assert code == 2 and lines == [f"daenr train: error: {path} [train_images]: expected values that fit in float32 "
                                   "(|x| <= 3.403e+38), got 1e+39 at index (0, 1, 2)"]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_on_a_corrupted_archive_exits_2_in_one_line(tmp_path, capsys):
    path = write_npz(tmp_path / "data.npz", compress=True)
    _corrupt_member(path, "train_responses.npy")
    code, lines = _train_cli(path, tmp_path / "run", capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"daenr train: error: {path} [train_responses]: expected an intact archive member")


def test_train_on_constant_responses_exits_2_before_training(tmp_path, capsys):
    path = write_npz(tmp_path / "data.npz", train_responses=np.ones((40, 3)))
    code, lines = _train_cli(path, tmp_path / "run", capsys)
    assert code == 2 and lines == [f"daenr train: error: {path} [train_responses]: expected responses that vary "
                                   "across images or neurons, got every response = 1"]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
