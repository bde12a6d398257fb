"""The GPU dispatch table as data: the loader's checks, and the derivation from the committed H200 results
(``benchmarks/results/gpu``), from which it must read the orders those files show."""
import json
import math
import shutil
from pathlib import Path

import pytest

from daenr_fast import dispatch_table as dt

GPU_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu"
PAPER, MID, SENSORIUM = 64 * 48 * 256 * 103, 128 * 64 * 256 * 1000, 32 * 64 * 1568 * 8000


def order_at(table: dict, op: str, kind: str, work: float) -> list:
    for step in table["ops"][op][kind]["steps"]:
        if step["up_to"] is None or work <= step["up_to"]:
            return step["order"]
    raise AssertionError("no unbounded last step")


def write(tmp_path, ops) -> Path:
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"ops": ops}))
    return path


def steps(*pairs):
    return {"steps": [{"up_to": limit, "order": list(order)} for limit, order in pairs]}


GOOD = ("cuda", "triton", "torch")


def test_package_table_loads():
    table = dt.load()
    for kinds in table.values():
        assert set(kinds) == set(dt.KINDS)
        for s in kinds.values():
            assert s[-1][0] == math.inf and [limit for limit, _ in s] == sorted(limit for limit, _ in s)


def test_loader_reads_steps(tmp_path):
    path = write(tmp_path, {"op": {"float32": steps((10, GOOD), (None, GOOD[::-1])), "half": steps((None, GOOD))}})
    assert dt.load(path) == {"op": {"float32": ((10.0, GOOD), (math.inf, GOOD[::-1])), "half": ((math.inf, GOOD),)}}


@pytest.mark.parametrize("ops,message", [
    ({"op": {"float32": steps((None, GOOD))}}, "must have the classes"),
    ({"op": {"float32": steps((10, GOOD)), "half": steps((None, GOOD))}}, "only the last step"),
    ({"op": {"float32": steps((None, GOOD), (None, GOOD)), "half": steps((None, GOOD))}}, "only the last step"),
    ({"op": {"float32": steps((10, GOOD), (5, GOOD), (None, GOOD)), "half": steps((None, GOOD))}},
     "must be a number above the previous"),
    ({"op": {"float32": steps(("10", GOOD), (None, GOOD)), "half": steps((None, GOOD))}}, "must be a number"),
    ({"op": {"float32": steps((None, ("cuda", "torch"))), "half": steps((None, GOOD))}}, "must list each of"),
    ({"op": {"float32": steps((None, ("cuda", "cuda", "torch"))), "half": steps((None, GOOD))}},
     "must list each of"),
    ({"op": {"float32": {"steps": []}, "half": steps((None, GOOD))}}, "expected {'steps'"),
    ({"op": {"float32": {"steps": [{"order": list(GOOD)}]}, "half": steps((None, GOOD))}}, "expected keys"),
], ids=["class missing", "no unbounded step", "two unbounded", "bounds shrink", "bound not a number",
        "backend missing", "backend twice", "no steps", "no up_to"])
def test_loader_refuses_malformed_tables(tmp_path, ops, message):
    with pytest.raises(dt.TableError, match=message):
        dt.load(write(tmp_path, ops))


def test_loader_refuses_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="dispatch table .*missing"):
        dt.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(dt.TableError, match="not valid JSON"):
        dt.load(bad)
    bad.write_text("[]")
    with pytest.raises(dt.TableError, match="'ops' object"):
        dt.load(bad)


def test_rank_puts_the_reference_behind_fused_backends_within_the_tie():
    assert dt._rank({"torch": 1.0, "cuda": 1.04, "triton": 2.0}, 0.05) == ("cuda", "torch", "triton")
    assert dt._rank({"torch": 1.0, "cuda": 1.06, "triton": 2.0}, 0.05) == ("torch", "cuda", "triton")
    assert dt._rank({"torch": 1.0, "cuda": 0.5, "triton": 0.9}, 0.0) == ("cuda", "triton", "torch")
    with pytest.raises(ValueError, match="tie must be >= 0"):
        dt.measurements([], tie=-1)


def test_bound_is_the_geometric_mean_to_one_digit():
    assert dt._bound(PAPER, MID) == 4e8
    assert dt._bound(1e6, 1e8) == 1e7


def test_derivation_from_the_committed_h200_results():
    rows = dt.read_results([GPU_RESULTS])
    assert rows, "no GPU results committed"
    table = dt.derive(rows, base=json.loads(dt.TABLE_PATH.read_text()))
    # what the H200 files say (fwd+bwd medians; benchmarks/results/gpu/bench*/readout.json)
    assert order_at(table, "factorized_readout", "float32", PAPER)[0] == "cuda"
    assert order_at(table, "factorized_readout", "float32", SENSORIUM)[0] == "torch"
    assert order_at(table, "factorized_readout", "half", PAPER)[0] == "cuda"
    assert order_at(table, "factorized_readout", "half", SENSORIUM)[0] == "triton"
    assert order_at(table, "poisson_loss", "float32", 2 ** 21)[0] == "cuda"
    assert order_at(table, "vq_lookup", "half", 65536 * 8192 * 256)[0] == "triton"
    assert order_at(table, "vq_lookup", "float32", 65536 * 8192 * 256)[0] == "cuda"
    # no GPU results for the Gaussian readout: the base entry stays
    assert table["ops"]["gaussian_readout"] == json.loads(dt.TABLE_PATH.read_text())["ops"]["gaussian_readout"]
    readout_steps = table["ops"]["factorized_readout"]["float32"]["steps"]
    assert readout_steps[0]["up_to"] == dt._bound(PAPER, MID) and readout_steps[-1]["up_to"] is None


def test_main_writes_a_table_that_loads(tmp_path, capsys):
    results = tmp_path / "gpu"
    shutil.copytree(GPU_RESULTS / "bench", results)
    out = tmp_path / "derived.json"
    assert dt.main([str(results), "--out", str(out)]) == 0
    loaded = dt.load(out)
    assert set(loaded) == set(dt.load())
    assert json.loads(out.read_text())["source"].startswith("derived from")
    printed = capsys.readouterr().out
    assert "factorized_readout   float32  <= 4e+08: cuda, torch, triton; above: torch, cuda, triton" in printed
    assert dt.main([str(results)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())


def test_read_results_refuses_an_empty_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no JSON files"):
        dt.read_results([tmp_path])
