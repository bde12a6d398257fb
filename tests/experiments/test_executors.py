"""The executors' contract without a cluster: outcomes as jobs finish, a raising job as its exception, options of
the other executor refused, an unreachable or malformed cluster address refused at once, and the error that names
the Ray extra when Ray is missing."""
import socket
import sys

import pytest

from daenr_fast.cli import main
from daenr_fast.experiments import executors as E
from daenr_fast.experiments.sweep import outcome_rows


def _square_or_raise(job):
    if job["x"] < 0:
        raise ValueError(f"negative x {job['x']}")
    return {"run_id": str(job["x"]), "value": job["x"] ** 2}


@pytest.mark.parametrize("jobs", [1, 2])
def test_local_executor_yields_every_outcome_and_exceptions(jobs):
    work = [{"x": 3}, {"x": -1}, {"x": 2}]
    got = {job["x"]: outcome for job, outcome in E.LocalExecutor(jobs).run(_square_or_raise, work)}
    assert got[3] == {"run_id": "3", "value": 9} and got[2] == {"run_id": "2", "value": 4}
    assert isinstance(got[-1], ValueError) and "negative x -1" in str(got[-1])


def test_outcome_rows_of_a_row_a_list_and_an_exception():
    job = {"run_id": "a", "label": "CAE", "seed": 0, "run_dir": "/x", "threads": 1}
    assert outcome_rows(job, {"run_id": "a"}) == [{"run_id": "a"}]
    assert outcome_rows(job, [{"run_id": "a"}, {"run_id": "b"}]) == [{"run_id": "a"}, {"run_id": "b"}]
    (row,) = outcome_rows(job, RuntimeError("worker died"))
    assert row == {"run_id": "a", "label": "CAE", "seed": 0, "status": "failed", "error": "RuntimeError: worker died"}


def test_options_of_the_other_executor_are_refused():
    with pytest.raises(ValueError, match="--address is an option of --executor ray"):
        E.make_executor("local", address="localhost:6379")
    with pytest.raises(ValueError, match="--gpus-per-task is an option of --executor ray"):
        E.make_executor("local", gpus_per_task=0.5)
    with pytest.raises(ValueError, match="--jobs is an option of --executor local"):
        E.make_executor("ray", jobs=2)
    with pytest.raises(ValueError, match="executor must be one of local, ray"):
        E.make_executor("dask")
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        E.LocalExecutor(0)


@pytest.mark.parametrize("kwargs, match", [
    ({"gpus_per_task": 1.5}, "gpus_per_task"), ({"gpus_per_task": -0.25}, "gpus_per_task"),
    ({"cpus_per_task": 0}, "cpus_per_task"), ({"cpus_per_task": 1.5}, "cpus_per_task"),
    ({"address": ""}, "address")])
def test_bad_ray_options_are_refused_before_connecting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.RayExecutor(**kwargs)


def test_missing_ray_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as without the package
    with pytest.raises(ImportError, match=r'pip install "daenr_fast\[ray\]"'):
        E.make_executor("ray")
    status = main(["reproduce", "table2", "--executor", "ray", "--out", str(tmp_path)])
    assert status == 2
    assert 'needs Ray, which is not installed: pip install "daenr_fast[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_address_without_a_cluster_fails_at_once():
    with pytest.raises(ConnectionError, match=r"no Ray cluster answers at --address 127\.0\.0\.1:\d+"):
        E.check_reachable(f"127.0.0.1:{_closed_port()}", timeout=5)
    with pytest.raises(ConnectionError, match=r"no Ray cluster answers at RAY_ADDRESS 127\.0\.0\.1:"):
        E.check_reachable(f"127.0.0.1:{_closed_port()}", timeout=5, source="RAY_ADDRESS")
    for bad in ("nohost", "host:", ":6379", "host:port"):
        with pytest.raises(ValueError, match="must be HOST:PORT"):
            E.check_reachable(bad)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        E.check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout=5)
