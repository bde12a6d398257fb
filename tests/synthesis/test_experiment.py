"""The experiment's aggregation over seeds (on made-up rates; the full experiment is run by hand)."""
import json
from types import SimpleNamespace as NS

import numpy as np
import pytest

from daenr_fast.synthesis.experiment import aggregate, derived

STATS = {"rms_contrast_mean": 0.4, "spectrum_slope_mean": -2.5, "spectrum_slope_of_set": -2.4,
         "intensity_distance_to_natural": 0.03}


def _seed(tmp_path, seed, decoder, pixel_cae, pixel_cnn, natural):
    def images(true, predicted):
        return NS(true=np.asarray(true, float), predicted=np.asarray(predicted, float))

    natural_ = NS(true=np.asarray(natural, float), true_best=np.asarray(natural, float) + 1,
                  predicted=np.ones(len(natural)))
    runs = {}
    for label, methods in (("CAE-FR2", {"decoder": images(decoder, [2, 2, 2]), "pixel": images(pixel_cae, [3, 3, 0])}),
                           ("CNN-FR2", {"pixel": images(pixel_cnn, [0, 3, 3])})):
        folder = tmp_path / f"{label}-{seed}"
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"neurons": {"pcc": 0.5 + seed / 10}}))
        summary = {"natural": STATS, **{m: STATS for m in methods}}
        runs[label] = {"result": NS(natural=natural_, methods=methods),
                       "table": {"run": str(folder), "summary": summary}}
    return runs


def test_fractions_ratios_and_intervals(tmp_path):
    per_seed = {0: _seed(tmp_path, 0, [2, 2, 2], [1, 3, 1], [3, 3, 3], [1, 1, 4]),
                1: _seed(tmp_path, 1, [2, 2, 2], [1, 1, 1], [3, 3, 3], [1, 1, 1])}
    agg = aggregate(per_seed)
    rows = agg["per_seed"]
    assert rows["0"]["fractions"]["decoder>pixel_cae"] == pytest.approx(2 / 3)
    assert rows["1"]["fractions"]["decoder>pixel_cae"] == 1.0
    assert rows["0"]["fractions"]["decoder>natural"] == pytest.approx(2 / 3)
    assert rows["0"]["fractions"]["decoder>natural_true_best"] == 0.0           # ties do not count
    assert rows["0"]["median_ratio_to_natural"]["decoder"] == 2.0
    assert rows["0"]["predicted_beats_natural"]["pixel_cae"] == pytest.approx(2 / 3)
    s = agg["summary"]["fractions"]["decoder>pixel_cae"]
    assert s["mean"] == pytest.approx(5 / 6) and s["n"] == 2 and s["low"] < s["mean"] < s["high"]
    assert agg["summary"]["test_pcc"]["CAE-FR2"]["mean"] == pytest.approx(0.55)
    assert rows["0"]["far_beyond_natural"]["decoder"] == 0.0 and rows["0"]["median_true"]["pixel_cnn"] == 3.0
    # what --rebuild recomputes from the saved per-neuron rates is what the run computed
    again = derived(json.loads(json.dumps(rows["0"])))
    assert all(rows["0"][key] == value for key, value in again.items())
