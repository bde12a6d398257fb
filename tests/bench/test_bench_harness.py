"""The benchmark harness: timing statistics, memory measurement, result files and the ``daenr bench`` command.

Bounds on times are loose on purpose (the machine may be loaded); no speed of any op is asserted.
"""
import csv
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from daenr_fast.bench import end_to_end, memory, readout, report, runner, timing

CPU = torch.device("cpu")


def test_summarize_known_samples():
    s = timing.summarize([5.0, 1.0, 3.0, 2.0, 4.0], number=7)
    assert (s.median_s, s.q1_s, s.q3_s, s.min_s, s.max_s) == (3.0, 2.0, 4.0, 1.0, 5.0)
    assert s.iqr_s == 2.0 and s.repeats == 5 and s.number == 7
    assert timing.summarize([0.5]).iqr_s == 0.0
    with pytest.raises(ValueError):
        timing.summarize([])


def test_time_fn_measures_a_sleep():
    stats = timing.time_fn(lambda: time.sleep(0.01), CPU, repeats=5, warmup=1, min_sample_s=0.0)
    assert stats.repeats == 5 and stats.number == 1
    assert 0.009 <= stats.median_s < 0.1
    assert stats.min_s <= stats.q1_s <= stats.median_s <= stats.q3_s <= stats.max_s


def test_time_fn_calibrates_fast_calls():
    stats = timing.time_fn(lambda: None, CPU, repeats=3, warmup=1, min_sample_s=0.002)
    assert stats.number > 1
    assert 0 < stats.median_s < 1e-3


def test_round_robin_times_each_and_respects_the_budget():
    calls = {"a": 0, "b": 0}

    def make(key, seconds):
        def fn():
            calls[key] += 1
            time.sleep(seconds)
        return fn

    stats = timing.time_round_robin({"a": make("a", 0.001), "b": make("b", 0.02)}, CPU, repeats=50, warmup=0,
                                    min_sample_s=0.0, max_time_s=0.1, min_repeats=3)
    assert set(stats) == {"a", "b"}
    assert stats["b"].median_s > stats["a"].median_s
    assert 3 <= stats["b"].repeats < 50 and stats["a"].repeats == 50


@pytest.mark.skipif(not timing.rss_supported(), reason="needs /proc/self/clear_refs")
def test_memory_child_sees_the_reference_intermediate():
    settings = runner.Settings(compile=False)
    impls = readout.implementations(readout.make_inputs(readout.SIZES["paper"], CPU), "fwd", CPU, compile=False)
    peaks = memory.peak_extra_bytes(readout, "paper", "fwd", settings, impls)
    pooled = 64 * 48 * 103 * 4  # the reference's (B,C,N) float32 intermediate
    assert 0.5 * pooled <= peaks["reference (einsum)"] < 50 * 2**20  # resolution: some 100 KiB
    assert peaks["daenr:cpu"] < peaks["reference (einsum)"]


def _tiny_rows():
    settings = runner.Settings(repeats=2, warmup=1, min_sample_s=0.0, max_time_s=1.0, compile=False, memory=False)
    return runner.run_op(readout, ["tiny"], ["fwd"], settings, log=lambda _: None)


def test_rows_have_ratios_and_correctness():
    rows = {r["impl"]: r for r in _tiny_rows()}
    assert set(runner.ROW_KEYS) <= set(rows["reference (einsum)"])
    assert rows["reference (einsum)"]["speedup_vs_ref"] == pytest.approx(1.0)
    assert rows["limit (1 GEMM)"]["x_limit"] == pytest.approx(1.0)
    assert rows["daenr:cpu"]["status"] == "ok" and rows["daenr:cpu"]["max_rel_err"] < 1e-4
    assert rows["torch.compile(reference)"]["median_ms"] is None


def test_report_files_have_the_expected_columns(tmp_path):
    rows = _tiny_rows()
    meta = report.run_metadata("cpu", torch.get_num_threads(), ["daenr", "bench"])
    meta.update(loadavg_before=[0.0], loadavg_after=[0.0])
    paths = report.save(tmp_path, "readout", meta, rows)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    data = json.loads((tmp_path / "readout.json").read_text())
    for key in ("date", "cpu", "cpu_count", "torch_threads", "torch", "python", "command", "loadavg_before"):
        assert key in data["meta"]
    assert len(data["results"]) == len(rows)
    with (tmp_path / "readout.csv").open() as f:
        header = next(csv.reader(f))
    for key in ("op", "size", "shape", "mode", "impl", "median_ms", "iqr_ms", "speedup_vs_ref", "x_limit",
                "peak_extra_mb", "date", "cpu"):
        assert key in header
    assert "| implementation |" in (tmp_path / "readout.md").read_text()
    assert (tmp_path / "readout.png").read_bytes()[:4] == b"\x89PNG"


def test_backend_env_restores_the_variable(monkeypatch):
    monkeypatch.setenv("DAENR_FAST_BACKEND", "cpu")
    with end_to_end.backend_env("torch"):
        assert os.environ["DAENR_FAST_BACKEND"] == "torch"
    assert os.environ["DAENR_FAST_BACKEND"] == "cpu"
    with end_to_end.backend_env(None):
        assert "DAENR_FAST_BACKEND" not in os.environ
    assert os.environ["DAENR_FAST_BACKEND"] == "cpu"


def test_cli_quick_readout_paper_end_to_end(tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "daenr_fast.cli", "bench", "--quick", "--ops", "readout", "--sizes", "paper",
           "--repeats", "2", "--no-memory", "--out", str(out)]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for ext in ("json", "csv", "md", "png"):
        assert (out / f"readout.{ext}").is_file()
    data = json.loads((out / "readout.json").read_text())
    assert data["meta"]["OMP_WAIT_POLICY"] == "PASSIVE"
    rows = [r for r in data["results"] if r["impl"] == "daenr:cpu"]
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    assert all(r["size"] == "paper" and r["status"] == "ok" and r["median_ms"] > 0 for r in rows)
    assert "readout paper" in done.stdout


def test_cli_options_survive_the_passive_wait_rerun():
    from daenr_fast.cli import build_parser
    from daenr_fast.commands import bench

    argv = ["bench", "--ops", "readout,vq", "--sizes", "paper", "--repeats", "4", "--quick", "--out", "x"]
    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(["bench", *bench._argv(args)])
    assert {k: v for k, v in vars(again).items() if k != "_run"} == {k: v for k, v in vars(args).items()
                                                                       if k != "_run"}


def test_cli_rejects_unknown_ops():
    from daenr_fast.cli import main

    assert main(["bench", "--ops", "nope", "--out", "unused"]) == 2
