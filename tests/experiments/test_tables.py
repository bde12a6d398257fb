"""Table layouts: the ``+gr`` targets add marked Gaussian-readout rows (FR preset weights, no paper value, no
claim) and leave the paper's rows, claims and arms as they are; a tiny ``daenr reproduce table4+gr`` trains them."""
import csv

import pytest

from daenr_fast.cli import main
from daenr_fast.experiments.paper_values import paper_value
from daenr_fast.experiments.tables import (EXTENDED, NOT_IN_PAPER, TARGETS, arms_for, layouts_for, preset_arm)


def _is_gr(arm) -> bool:
    return arm.model.endswith("-gr")


@pytest.mark.parametrize("table", EXTENDED)
def test_extra_rows_are_marked_and_the_paper_rows_unchanged(table):
    plain, extended = layouts_for(table)[0], layouts_for(table + "+gr")[0]
    assert table + "+gr" in TARGETS
    assert [r for r in extended.rows if NOT_IN_PAPER not in r[0]] == plain.rows
    assert extended.claims == plain.claims and not any(_is_gr(c.better) or _is_gr(c.worse) for c in plain.claims)
    extra = [(label, cells) for label, cells in extended.rows if NOT_IN_PAPER in label]
    assert extra and not any(NOT_IN_PAPER in label for label, _ in plain.rows)
    for label, cells in extra:
        for cell in filter(None, cells):
            assert _is_gr(cell.arm) and cell.arm.preset is None
            assert paper_value(cell.paper[0], cell.arm.region, cell.paper[1], cell.metric) is None
    assert NOT_IN_PAPER.strip() in extended.note and not plain.note.count(NOT_IN_PAPER.strip())
    assert set(arms_for(table)) < set(arms_for(table + "+gr"))
    assert all(_is_gr(a) for a in set(arms_for(table + "+gr")) - set(arms_for(table)))


def test_gr_arms_take_the_fr_preset_weights():
    layout = layouts_for("table6+gr", (2,))[0]
    arms = {(c.arm.model, c.arm.layer): c.arm for _, cells in layout.rows for c in cells if _is_gr(c.arm)}
    assert set(arms) == {(m, i) for m in ("cnn-gr", "cae-gr", "vae-gr", "vq-vae-gr") for i in (1, 2, 3, 4)}
    for (model, layer), arm in arms.items():
        if model == "cnn-gr":
            assert (arm.alpha, arm.beta) == (0.0, 1.0)
        else:
            fr = preset_arm("table12", 2, model[:-3] + "-fr", layer)
            assert (arm.alpha, arm.beta, arm.region) == (fr.alpha, fr.beta, 2)
    table5 = layouts_for("table5+gr")[0]
    labels = [label for label, _ in table5.rows if NOT_IN_PAPER in label]
    assert labels == [f"{m}{NOT_IN_PAPER}" for m in ("CAE-GR", "VAE-GR", "VQ-VAE-GR") for _ in range(3)]


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown target 'table2\+gr'; valid: .*table6\+gr"):
        layouts_for("table2+gr")


def test_reproduce_trains_and_reports_the_extra_rows(tiny_data, tmp_path):
    args = ["reproduce", "table4+gr", "--data", tiny_data, "--regions", "3", "--seeds", "1", "--quick",
            "--max-steps", "2", "--jobs", "1", "--threads", "1", "--device", "cpu", "--out", str(tmp_path)]
    assert main(args) == 0
    with open(tmp_path / "results.csv", newline="") as handle:
        rows = {r["label"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {f"{k}-{r}{i}" for k in ("CNN", "CAE") for r in ("FR", "GR") for i in (1, 2, 3, 4)}
    assert all(r["status"] == "ok" for r in rows.values())
    text = (tmp_path / "table4+gr" / "report.md").read_text()
    assert f"| region 3: CNN-GRi, CAE-GRi{NOT_IN_PAPER} |" in text
    claims = text.split("### Claims")[1].split("\n## ")[0]
    assert "CAE-FR2" in claims and "GR" not in claims
