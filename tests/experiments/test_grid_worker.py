"""Sweeps with grids: compatible runs grouped, each run's row and folder as when it trains alone, reuse."""
import pytest

from daenr_fast.cli import main
from daenr_fast.experiments import sweep as S
from daenr_fast.experiments.grid_worker import GRID_KEY, default_grid_size, group_jobs, member_jobs
from daenr_fast.experiments.protocol import Protocol
from daenr_fast.experiments.tables import baseline_arm, preset_arm

TINY = Protocol("tiny", batch_size=8, eval_every=2, patience=4, rounds=2, max_steps=3)
ARMS = [baseline_arm("cae", 3), preset_arm("table8", 3, "cae-fr", 2), preset_arm("table10", 3, "cae-fr", 2)]
SEEDS = [0, 1]
FLOATS = ("mse", "psnr", "ssim", "pcc", "pcc_median")


def _quiet(_line):
    pass


def _jobs(arms, tmp_path, seeds=SEEDS):
    return [S.make_job(a, s, TINY, "sim", tmp_path, 1) for a in arms for s in seeds]


def test_group_jobs_merges_one_model_and_layer(tmp_path):
    jobs = _jobs(ARMS + [baseline_arm("vae", 3), baseline_arm("cnn-fc", 3, layer=2)], tmp_path)
    grouped = group_jobs(jobs)
    grids = [j for j in grouped if GRID_KEY in j]
    # CAE seeds together; CAE-FR2 at both weightings and seeds together; on the CPU (loop grids) VAE and CNN-FC
    # (dropout) seeds together too
    assert sorted(len(member_jobs(g)) for g in grids) == [2, 2, 2, 4]
    assert sorted(m["run_id"] for j in grouped for m in member_jobs(j)) == sorted(j["run_id"] for j in jobs)
    # on a GPU the models that cannot be stacked stay single jobs (a loop grid would serialise them)
    on_gpu = group_jobs([dict(j, device="cuda") for j in jobs])
    assert sorted(j["label"] for j in on_gpu if GRID_KEY not in j) == ["CNN-FC2", "CNN-FC2", "VAE", "VAE"]
    assert [len(member_jobs(j)) for j in group_jobs(jobs[2:6], size=3)] == [3, 1]
    with pytest.raises(ValueError, match="grid size must be an integer >= 1"):
        group_jobs(jobs, size=0)
    assert (default_grid_size("cpu"), default_grid_size("cuda:1")) == (8, 32)


@pytest.fixture(scope="module")
def swept(tiny_data, tmp_path_factory):
    alone, grid = tmp_path_factory.mktemp("alone"), tmp_path_factory.mktemp("grid")
    S.run_sweep(ARMS, SEEDS, TINY, tiny_data, alone, threads=1, log=_quiet)
    summary = S.run_sweep(ARMS, SEEDS, TINY, tiny_data, grid, threads=1, log=_quiet, grid=8)
    return S.read_results(alone), grid, summary


def test_grid_sweep_rows_match_lone_runs(swept):
    alone, out, summary = swept
    rows = S.read_results(out)
    assert summary.trained == 6 and summary.failed == 0 and rows.keys() == alone.keys()
    for rid, row in rows.items():
        assert row["status"] == "ok" and row["steps"] == alone[rid]["steps"] == str(TINY.max_steps)
        for key in FLOATS:  # a CPU grid loops over the lone runs' own operations (one thread): equal
            assert row[key] == alone[rid][key], (rid, key)
        names = {p.name for p in (out / "runs" / rid).iterdir()}
        assert {"config.json", "metrics.json", "history.csv", "checkpoint.pt", "recon.npz"} <= names


def test_grid_sweep_rerun_reuses_every_run(swept, tiny_data, monkeypatch):
    _, out, _ = swept
    monkeypatch.setattr(S, "run_job", lambda job: pytest.fail("retrained a finished run"))
    summary = S.run_sweep(ARMS, SEEDS, TINY, tiny_data, out, threads=1, log=_quiet, grid=8)
    assert summary.reused == 6 and summary.trained == 0


def test_reproduce_grid_option(tiny_data, tmp_path, capsys):
    args = ["reproduce", "table2", "--data", tiny_data, "--regions", "3", "--seeds", "2", "--quick",
            "--max-steps", "2", "--threads", "1", "--device", "cpu", "--out", str(tmp_path), "--grid"]
    assert main(args) == 0
    assert main(args) == 0
    assert "reusing 10 of 10 finished runs" in capsys.readouterr().out
    assert main(args[:-1] + ["--grid", "0"]) == 2
    assert "--grid must be at least 1" in capsys.readouterr().err
