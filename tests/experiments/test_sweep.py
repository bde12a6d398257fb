"""The resumable sweep on a tiny data set: rows written, reuse without retraining, subsets, failures, jobs."""
import numpy as np
import pytest

from daenr_fast.data import load
from daenr_fast.experiments import sweep as S
from daenr_fast.experiments.protocol import Protocol
from daenr_fast.experiments.subsets import data_spec, subset_neurons
from daenr_fast.experiments.tables import Arm, baseline_arm, preset_arm
from daenr_fast.experiments.worker import RECON_NAME

TINY = Protocol("tiny", batch_size=8, eval_every=2, patience=4, rounds=2, max_steps=3)
ARMS = [baseline_arm("cae", 3), preset_arm("table8", 3, "cae-fr", 2)]


def _quiet(_line):
    pass


@pytest.fixture(scope="module")
def swept(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    summary = S.run_sweep(ARMS, [0, 1], TINY, tiny_data, out, jobs=1, threads=1, log=_quiet)
    return out, summary


def test_rows_written_one_per_run(swept, tiny_data):
    out, summary = swept
    rows = S.read_results(out)
    assert summary.trained == 4 and summary.reused == 0 and summary.failed == 0
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values())
    for arm in ARMS:
        found = S.rows_for(rows, arm, [0, 1], TINY, tiny_data)
        assert sorted(int(r["seed"]) for r in found) == [0, 1]
        for row in found:
            assert 0 < float(row["mse"]) < 4 and 0 <= float(row["ssim"]) <= 1
            assert int(row["steps"]) == TINY.max_steps
            assert (row["pcc"] != "") == (arm.model == "cae-fr")
            assert (out / "runs" / row["run_id"] / RECON_NAME).exists()


def test_rerun_reuses_without_training(swept, tiny_data, monkeypatch):
    out, _ = swept
    calls = []
    monkeypatch.setattr(S, "execute", lambda job: calls.append(job) or pytest.fail("retrained a finished run"))
    summary = S.run_sweep(ARMS, [0, 1], TINY, tiny_data, out, jobs=1, threads=1, log=_quiet)
    assert calls == [] and summary.reused == 4 and summary.trained == 0
    assert len(S.read_results(out)) == 4


def test_new_seed_trains_only_the_missing_runs(swept, tiny_data, monkeypatch):
    out, _ = swept
    trained = []
    real = S.execute
    monkeypatch.setattr(S, "execute", lambda job: trained.append(job["run_id"]) or real(job))
    summary = S.run_sweep(ARMS[:1], [0, 1, 2], TINY, tiny_data, out, jobs=1, threads=1, log=_quiet)
    assert summary.reused == 2 and len(trained) == 1 and "-s2-" in trained[0]


def test_run_id_depends_on_what_changes_the_numbers(tiny_data):
    arm = ARMS[1]
    base = S.run_id(arm, 0, TINY, tiny_data)
    assert base == S.run_id(arm, 0, TINY, tiny_data)
    assert base.startswith("cae-fr2-r3-all-s0-")
    others = {S.run_id(arm, 1, TINY, tiny_data), S.run_id(arm, 0, TINY.with_overrides(max_steps=5), tiny_data),
              S.run_id(arm, 0, TINY, "sim"), S.run_id(preset_arm("table10", 3, "cae-fr", 2), 0, TINY, tiny_data)}
    assert base not in others and len(others) == 4


def test_failed_run_is_recorded_and_retried(tmp_path, tiny_data):
    arm = Arm("cae", 1, 3, 1.0, 0.0)
    missing = str(tmp_path / "missing.npz")
    summary = S.run_sweep([arm], [0], TINY, missing, tmp_path / "out", log=_quiet)
    (row,) = S.read_results(tmp_path / "out").values()
    assert summary.failed == 1 and row["status"] == "failed" and "missing.npz" in row["error"]
    again = S.run_sweep([arm], [0], TINY, missing, tmp_path / "out", log=_quiet)
    assert again.reused == 0 and again.failed == 1


def test_subset_runs_split_the_parent_neurons(tmp_path, tiny_data):
    parent = preset_arm("table8", 3, "cae-fr", 1)
    subs = [preset_arm("table8", 3, "cae-fr", 1, s, parent) for s in ("sig", "insig")]
    S.run_sweep([parent] + subs, [0], TINY, tiny_data, tmp_path, log=_quiet)
    rows = {r["subset"]: r for r in S.read_results(tmp_path).values()}
    n_sig = int(rows["all"]["n_significant"])
    n_all = int(rows["all"]["n_neurons"])
    expected = {"sig": n_sig, "insig": n_all - n_sig}
    for subset, n in expected.items():
        assert rows[subset]["parent_run"] == rows["all"]["run_id"]
        if n == 0:
            assert rows[subset]["status"] == "skipped"
        else:
            assert rows[subset]["status"] == "ok" and int(rows[subset]["n_neurons"]) == n


def test_subset_neurons_slices_responses_and_ground_truth(tiny_data):
    dataset = load(tiny_data)
    sub = subset_neurons(dataset, [1, 3])
    assert sub.n_neurons == 2
    np.testing.assert_array_equal(sub.train_responses, dataset.train_responses[:, [1, 3]])
    np.testing.assert_array_equal(sub.test_responses, dataset.test_responses[..., [1, 3]])
    np.testing.assert_array_equal(sub.ground_truth["test_rates"], dataset.ground_truth["test_rates"][:, [1, 3]])
    np.testing.assert_array_equal(sub.train_images, dataset.train_images)
    with pytest.raises(ValueError):
        subset_neurons(dataset, [])


def test_data_spec_per_region():
    assert data_spec("sim", 2) == "sim:region2"
    assert data_spec("sim:seed=4", 1) == "sim:region1:seed=4"
    assert data_spec("antolik:/d/", 3) == "antolik:/d/region3"
    assert data_spec("/x/r{region}.npz", 1) == "/x/r1.npz"
    assert data_spec("/x/one.npz", 2) == "/x/one.npz"


@pytest.mark.slow
def test_parallel_jobs_give_the_same_rows(tmp_path, tiny_data, swept):
    out, _ = swept
    summary = S.run_sweep(ARMS, [0], TINY, tiny_data, tmp_path, jobs=2, threads=1, log=_quiet)
    assert summary.trained == 2 and summary.failed == 0
    serial, parallel = S.read_results(out), S.read_results(tmp_path)
    for rid, row in parallel.items():
        assert float(row["mse"]) == pytest.approx(float(serial[rid]["mse"]), rel=1e-4)
