"""write_report(): the files, the JSON table, and nothing written on failure."""
import json

import numpy as np
import pytest

from daenr_fast.synthesis import synthesize, write_report
from daenr_fast.synthesis.report import JSON_NAME, NPZ_NAME, PNG_NAME, per_image_stats


@pytest.fixture(scope="module")
def result(opened):
    return synthesize(opened("cae-fr"), [2, 4], steps=2, restarts=2, progress=False)


def test_files_and_table(result, tmp_path):
    report = write_report(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([NPZ_NAME, JSON_NAME, PNG_NAME])
    assert json.loads((tmp_path / "out" / JSON_NAME).read_text()) == report
    assert report["model"] == "CAE-FR2" and report["objective"] == "max" and report["ground_truth"] is True
    rows = report["per_neuron"]
    assert [r["neuron"] for r in rows] == [2, 4]
    for i, row in enumerate(rows):
        for name in ("natural", "decoder", "pixel"):
            assert {"predicted_rate", "true_rate", "rms_contrast", "spectrum_slope"} <= set(row[name])
        assert row["decoder"]["true_rate"] == pytest.approx(result.methods["decoder"].true[i])
        assert row["natural"]["test_image"] == result.natural.test_index[i]
    comp = report["summary"]["comparisons"]
    dec, pix = result.methods["decoder"].true, result.methods["pixel"].true
    assert comp["decoder_beats_pixel_true"] == pytest.approx(np.mean(dec > pix))
    assert comp["decoder_beats_natural_true"] == pytest.approx(np.mean(dec > result.natural.true))
    ref = report["natural_reference"]
    assert ref["n_images"] == 50 and ref["spectrum_slope_mean"] < 0
    with np.load(tmp_path / "out" / NPZ_NAME) as npz:
        assert np.array_equal(npz["decoder_images"], result.methods["decoder"].images)
        assert npz["true_rf"].shape == (2, 32, 32) and npz["neurons"].tolist() == [2, 4]
        assert json.loads(str(npz["meta"]))["image_space"] == "model"


def test_per_image_statistics_of_natural_images(opened):
    images = opened("cae-fr").splits.tensors("test")[0][:4, 0].numpy()
    stats = per_image_stats(images)
    x = (images.astype(np.float64) + 1) / 2
    assert np.allclose(stats["rms_contrast"], x.std(axis=(1, 2)) / x.mean(axis=(1, 2)))
    assert stats["spectrum_slope"].shape == (4,) and (stats["spectrum_slope"] < 0).all()


def test_out_that_is_a_file_writes_nothing(result, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="--out .* is an existing file"):
        write_report(result, target)
    assert target.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]
