"""The grid rows of the end-to-end benchmark: a grid and its separate runs timed, rates consistent, files written."""
import json

import pytest

from daenr_fast.bench import end_to_end
from daenr_fast.bench.runner import Settings


@pytest.fixture(scope="module")
def grid_rows():
    return end_to_end.grid_throughput(Settings(repeats=1, max_time_s=0.0), quick=True)


def test_grid_rows_time_a_grid_and_its_separate_runs(grid_rows):
    assert [(r["models"], r["variant"].split(" (")[0]) for r in grid_rows] == [
        (1, "grid of 1, vmap"), (1, "grid of 1, loop"), (1, "1 separate runs"),
        (2, "grid of 2, vmap"), (2, "grid of 2, loop"), (2, "2 separate runs")]
    for row in grid_rows:
        assert row["status"] == "ok" and row["step_ms"] > 0
        assert row["model_steps_per_s"] == pytest.approx(row["models"] * 1e3 / row["step_ms"])
    by_g = {g: [r for r in grid_rows if r["models"] == g] for g in (1, 2)}
    for g, (*grids, separate) in by_g.items():
        assert separate["speedup_vs_separate"] == 1.0
        single = by_g[1][-1]["model_steps_per_s"]
        for grid in grids:
            assert grid["speedup_vs_separate"] == pytest.approx(separate["step_ms"] / grid["step_ms"])
            assert grid["speedup_vs_single"] == pytest.approx(grid["model_steps_per_s"] / single)


def test_grid_rows_are_saved_as_their_own_table(grid_rows, tmp_path):
    meta = {"cpu": "test cpu", "torch_threads": 1, "date": "today", "command": "daenr bench --ops e2e"}
    end_to_end.save(tmp_path, meta, grid_rows)
    md = (tmp_path / "e2e.md").read_text()
    assert "| G | variant | step ms (IQR) | model-steps/s | vs G separate runs | vs 1 lone run |" in md
    assert md.count("| 2 | ") == 3
    saved = json.loads((tmp_path / "e2e.json").read_text())
    assert [r["models"] for r in saved["results"]] == [1, 1, 1, 2, 2, 2]
    assert "model_steps_per_s" in (tmp_path / "e2e.csv").read_text().splitlines()[-len(grid_rows) - 1]
    assert "G=2" in end_to_end.format_table(grid_rows)
