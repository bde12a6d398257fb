"""Sweeps as Ray tasks on a real local Ray instance (2 CPUs, started here) with the tiny data set: the rows equal a
local sweep's, a rerun reuses them, a task that raises or whose worker dies is a failed row while the others
finish, fractional GPU reservations, and a ``daenr reproduce --executor ray --address`` driver that is killed
mid-sweep and rerun trains only what it had not finished.

Skipped when Ray is not installed, except under ``CI`` or ``DAENR_FAST_EXPECT_COMPILED`` (set by .ci/run, which
installs the ``ray`` extra): there its absence is a failure.
"""
import csv
import importlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from daenr_fast.cli import main
from daenr_fast.experiments import sweep as S
from daenr_fast.experiments.executors import RayExecutor
from daenr_fast.experiments.protocol import Protocol
from daenr_fast.experiments.tables import baseline_arm, preset_arm

IN_CI = bool(os.environ.get("CI") or os.environ.get("DAENR_FAST_EXPECT_COMPILED"))
ray = importlib.import_module("ray") if IN_CI else pytest.importorskip("ray")

TINY = Protocol("tiny", batch_size=8, eval_every=2, patience=4, rounds=2, max_steps=3)
ARMS = [baseline_arm("cae", 3), preset_arm("table8", 3, "cae-fr", 2)]
#: the logical GPU the test cluster declares (no device is needed to reserve fractions of it)
CLUSTER = {"num_cpus": 2, "num_gpus": 1}


def _quiet(_line):
    pass


def test_an_unreachable_ray_address_variable_is_refused(monkeypatch):
    """(First in this file: it needs this process not yet connected to Ray.)"""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    assert not ray.is_initialized()
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at RAY_ADDRESS 127.0.0.1:{port}"):
        RayExecutor()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    """A new local Ray instance for this module (``address="local"``: not a cluster that ``ray start`` left on
    this machine); yields its address (HOST:PORT of its GCS). The task functions defined here are shipped by
    value: the workers cannot import a test module."""
    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(address="local", **CLUSTER, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield context.address_info["gcs_address"]
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_swept(cluster, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray")
    summary = S.run_sweep(ARMS, [0], TINY, tiny_data, out, threads=1, log=_quiet, executor=RayExecutor())
    return out, summary


def test_ray_rows_equal_a_local_sweep(ray_swept, tiny_data, tmp_path):
    out, summary = ray_swept
    assert summary.trained == 2 and summary.failed == 0 and summary.reused == 0
    S.run_sweep(ARMS, [0], TINY, tiny_data, tmp_path, jobs=1, threads=1, log=_quiet)
    remote, local = S.read_results(out), S.read_results(tmp_path)
    assert sorted(remote) == sorted(local) and len(remote) == 2
    for rid, row in remote.items():
        assert row["status"] == "ok"
        assert float(row["mse"]) == pytest.approx(float(local[rid]["mse"]), rel=1e-4)
        assert (out / "runs" / rid / "metrics.json").exists()


def test_ray_rerun_reuses_without_training(ray_swept, tiny_data):
    out, _ = ray_swept
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}
    summary = S.run_sweep(ARMS, [0], TINY, tiny_data, out, threads=1, log=_quiet, executor=RayExecutor())
    assert summary.reused == 2 and summary.trained == 0 and summary.failed == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and len(stamps) == 2


def failing_execute(job):
    """The sweep's worker, except that seed 1 raises and seed 2 kills its own worker process."""
    if job["seed"] == 1:
        raise RuntimeError("seed 1 refuses to train")
    if job["seed"] == 2:
        os._exit(3)
    return S.execute(job)


def test_raising_and_dying_tasks_are_failed_rows(cluster, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(S, "execute", failing_execute)
    summary = S.run_sweep(ARMS[:1], [0, 1, 2], TINY, tiny_data, tmp_path, threads=1, log=_quiet,
                          executor=RayExecutor())
    rows = {int(r["seed"]): r for r in S.read_results(tmp_path).values()}
    assert summary.trained == 1 and summary.failed == 2 and sorted(rows) == [0, 1, 2]
    assert rows[0]["status"] == "ok" and float(rows[0]["mse"]) > 0
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "RuntimeError: seed 1 refuses to train"
    assert rows[2]["status"] == "failed" and "WorkerCrashedError" in rows[2]["error"]


def assigned(_job):
    """What Ray reserved for this task, and the device it exposes to it."""
    return ray.get_runtime_context().get_assigned_resources(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_a_gpu_fraction_lets_tasks_share_a_device(cluster):
    executor = RayExecutor(gpus_per_task=0.5)
    outcomes = [outcome for _, outcome in executor.run(assigned, [{}, {}])]
    assert outcomes == [({"CPU": 1.0, "GPU": 0.5}, "0")] * 2
    assert executor.job_device("auto") == "cuda"
    with pytest.raises(ValueError, match="--device cpu"):
        executor.job_device("cpu")
    with pytest.raises(ValueError, match="--gpus-per-task > 0"):
        RayExecutor().job_device("cuda")
    assert RayExecutor().job_device("auto") == "cpu"
    assert executor.describe(1) == "Ray tasks of 1 CPU(s) and 0.5 GPU(s) on a cluster of 2 CPU(s) and 1 GPU(s)"
    assert RayExecutor().describe(1).endswith("(the runs train on CPU: give --gpus-per-task to use the GPUs)")


def _rows(path):
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_killed_driver_reruns_only_the_unfinished_runs(cluster, tiny_data, tmp_path, capsys):
    args = ["reproduce", "table2", "--data", tiny_data, "--regions", "3", "--seeds", "1", "--quick",
            "--max-steps", "2", "--threads", "1", "--executor", "ray", "--out", str(tmp_path)]
    log = tmp_path / "driver.log"
    with open(log, "wb") as handle:
        driver = subprocess.Popen([sys.executable, "-m", "daenr_fast.cli", *args, "--address", cluster],
                                  stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not _rows(tmp_path / "results.csv") and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    finished = {r["run_id"] for r in _rows(tmp_path / "results.csv")}
    assert 1 <= len(finished) < 5, log.read_text()[-2000:]
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"reusing {len(finished)} of 5 finished runs" in printed
    assert f"({5 - len(finished)} trained, {len(finished)} reused, 0 failed)" in printed
    rows = _rows(tmp_path / "results.csv")
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
