"""The data engine: predicted and true rates for the images of a .npz."""
import json

import numpy as np
import pytest

from daenr_fast.synthesis.predict import predict_file, read_images


@pytest.fixture(scope="module")
def raw_test_images():
    from daenr_fast import data

    return data.load("sim:region2").test_images                 # (50, 31, 31) raw stimuli in [0, 1]


def test_generic_format_images_give_the_runs_predictions_and_the_stored_true_rates(opened, raw_test_images,
                                                                                   tmp_path):
    run = opened("cnn-fr")
    src = tmp_path / "images.npz"
    np.savez(src, test_images=raw_test_images, train_images=raw_test_images[:3], other=np.zeros(2))
    out = tmp_path / "responses.npz"
    summary = predict_file(run, src, out)
    assert set(summary) == {"test_images", "train_images"}
    with np.load(out) as npz:
        assert set(npz.files) == {"neurons", "test_predicted", "test_true", "train_predicted", "train_true"}
        assert npz["test_predicted"].shape == npz["test_true"].shape == (50, 55)
        expected = run.predict(run.splits.tensors("test")[0])
        assert np.allclose(npz["test_predicted"], expected, rtol=1e-5, atol=1e-6)
        assert np.allclose(npz["test_true"], run.splits.ground_truth["test_rates"], rtol=1e-4)
        assert np.array_equal(npz["train_true"], npz["test_true"][:3])


def test_model_space_images_from_the_file_meta(opened, tmp_path):
    run = opened("cnn-fr")
    x = run.splits.tensors("test")[0][:4, 0].numpy()
    src = tmp_path / "syn.npz"
    np.savez(src, decoder_images=x, meta=np.array(json.dumps({"image_space": "model"})))
    stacks, space = read_images(src)
    assert space == "model" and list(stacks) == ["decoder_images"]
    predict_file(run, src, tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as npz:
        assert np.allclose(npz["decoder_predicted"], run.predict(run.splits.tensors("test")[0][:4]), rtol=1e-5)
        assert np.allclose(npz["decoder_true"], run.truth.rates(x), rtol=1e-5)


@pytest.mark.parametrize("arrays,kwargs,message", [
    (dict(test_images=np.zeros((2, 32, 32))), {}, "[test_images]: expected images of 31 x 31 pixels"),
    (dict(test_images=np.zeros((2, 31, 31))), dict(space="model"), "[test_images]: model-space images must be 32"),
    (dict(x_images=np.full((2, 32, 32), 2.0)), dict(space="model"), "must lie in [-1, 1]"),
    (dict(test_images=np.zeros((31, 31))), {}, "expected a stack of images (N, H, W)"),
    (dict(test_images=np.full((1, 31, 31), np.nan)), {}, "expected finite values"),
    (dict(responses=np.zeros(3)), {}, "no image keys"),
    (dict(test_images=np.zeros((1, 31, 31))), dict(keys=["val_images"]), "no key 'val_images'"),
    (dict(test_images=np.zeros((1, 31, 31))), dict(space="pixels"), "--space must be one of"),
])
def test_bad_images_name_the_argument_and_write_nothing(opened, tmp_path, arrays, kwargs, message):
    src = tmp_path / "bad.npz"
    np.savez(src, **arrays)
    out = tmp_path / "r.npz"
    with pytest.raises(ValueError) as info:
        predict_file(opened("cnn-fr"), src, out, **kwargs)
    assert message in str(info.value) and ("--images" in str(info.value) or "--space" in str(info.value))
    assert not out.exists()


def test_missing_and_foreign_files(opened, tmp_path):
    with pytest.raises(FileNotFoundError, match="--images .*no such file"):
        read_images(tmp_path / "none.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a .npz archive"):
        read_images(tmp_path / "text.npz")
    with pytest.raises(ValueError, match="--out must end in .npz"):
        predict_file(opened("cnn-fr"), tmp_path / "text.npz", tmp_path / "r.txt")
