"""The Poisson-loss benchmark module: its bandwidth tier, the copy limit's bytes and the host-overhead measurement
(run for real on CPU tensors, a few calls; no speed is asserted)."""
import json

import pytest
import torch

from daenr_fast.bench import poisson

CPU = torch.device("cpu")


def test_bandwidth_tier_has_at_least_16m_elements():
    b, n = poisson.SIZES["16M"]
    assert b * n >= 16 * 2 ** 20


def test_copy_limit_moves_the_bytes_of_the_fused_pass():
    inputs = poisson.make_inputs(poisson.SIZES["tiny"], CPU)
    limit = next(i for i in poisson.implementations(inputs, "fwd+bwd", CPU, compile=False) if i.kind == "limit")
    elements = int(limit.note.split()[2])
    assert abs(2 * 4 * elements - poisson.bytes_moved(poisson.SIZES["tiny"])) <= 8  # read + write, float32


def test_host_overhead_rows_cover_every_implementation_and_mode():
    result = poisson.host_overhead("cpu", "float32", calls=2, repeats=2)
    assert result["shape"] == {"B": 64, "N": 103} and result["device"] == "cpu"
    names = {row["impl"] for row in result["rows"]}
    assert {"reference", "eager (analytic grad)", "daenr:torch", "daenr:torch (validate=False)"} <= names
    assert {(row["impl"], row["mode"]) for row in result["rows"]} == {(n, m) for n in names
                                                                      for m in poisson.HOST_MODES}
    for row in result["rows"]:
        assert 0 < row["min_us"] <= row["host_us"] <= row["max_us"] and row["calls"] == 2


def test_host_overhead_main_writes_json(tmp_path, capsys):
    out = tmp_path / "host.json"
    assert poisson.main(["--calls", "1", "--repeats", "1", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["op"] == "poisson_loss" and saved["rows"]
    assert "host overhead per eager call" in capsys.readouterr().out


@pytest.mark.parametrize("calls,repeats", [(0, 3), (3, 0)])
def test_host_overhead_rejects_no_calls(calls, repeats):
    with pytest.raises(ValueError, match="calls and repeats must be at least 1"):
        poisson.host_overhead(calls=calls, repeats=repeats)
