"""report.md holds every table cell (our mean ± CI next to the paper's value), the claims and the figures.

The results are synthetic rows with known values, so every expected cell is computed here independently
(numpy + scipy) and looked up in the report text.
"""
import hashlib

import numpy as np
import pytest
from scipy import stats as st

from daenr_fast.experiments.claims import claim_results
from daenr_fast.experiments.paper_values import paper_value
from daenr_fast.experiments.protocol import QUICK
from daenr_fast.experiments.report import write_report
from daenr_fast.experiments.sweep import SweepSummary, run_id, write_results
from daenr_fast.experiments.tables import Claim, arms_for, baseline_arm, layouts_for, preset_arm
from daenr_fast.experiments.worker import RECON_NAME

SEEDS = [0, 1, 2]
NOISE = [0.0, 0.004, -0.002]
SPEC = {"mse": ".4f", "psnr": ".2f", "ssim": ".3f", "pcc": ".3f"}


def _value(arm, metric, seed):
    digest = int(hashlib.sha1(repr((arm.identity(), metric)).encode()).hexdigest()[:6], 16)
    scale = 20.0 if metric == "psnr" else 1.0
    return scale * (0.2 + (digest % 500) / 1000.0 + NOISE[seed])


def _share(arm, seed):
    """A synthetic gradient share (response term) for runs with a response term, else None."""
    if arm.model in ("cae", "vae", "vq-vae"):
        return None
    return 1.0 if arm.model.startswith("cnn-") else 0.1 + arm.layer / 10 + 0.01 * seed


def _rows(out):
    rows = {}
    for arm in arms_for("all"):
        for seed in SEEDS:
            rid = run_id(arm, seed, QUICK, "sim")
            rows[rid] = {"run_id": rid, "label": arm.label, "model": arm.model, "layer": arm.layer,
                         "region": arm.region, "subset": arm.subset, "seed": seed, "status": "ok",
                         "n_neurons": 100, "n_significant": 40 + seed, "wall_seconds": 1.0,
                         "grad_share_response": _share(arm, seed), **{m: _value(arm, m, seed) for m in SPEC}}
            if arm.region == 3 and arm.model == "cae":
                (out / "runs" / rid).mkdir(parents=True)
                images = np.zeros((10, 1, 32, 32), dtype=np.float32)
                np.savez(out / "runs" / rid / RECON_NAME, original=images, reconstruction=images)
    write_results(out, rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    _rows(out)
    path = write_report(out, "all", (1, 2, 3), SEEDS, QUICK, "sim", SweepSummary(0, 651, 0, 12.0))
    return path, path.read_text(encoding="utf-8")


def test_report_contains_every_cell_with_the_paper_value(report):
    _, text = report
    n_cells = 0
    for layout in layouts_for("all"):
        assert layout.title in text
        for _, cells in layout.rows:
            for cell in filter(None, cells):
                values = [_value(cell.arm, cell.metric, s) for s in SEEDS]
                low, high = st.t.interval(0.95, 2, loc=np.mean(values), scale=st.sem(values))
                spec = SPEC[cell.metric]
                table, label, subset = cell.paper
                paper = paper_value(table, cell.arm.region, label, cell.metric, subset)
                assert paper is not None, cell
                expected = f"{np.mean(values):{spec}} ± {(high - low) / 2:{spec}} ({paper:{spec}})"
                assert expected in text, (layout.name, label, cell.metric)
                n_cells += 1
    # Table 3 adds its "MSE all" column, Table 5 repeats each baseline in h1..h4
    assert n_cells == 45 + 4 * 7 + 24 + (9 + 3) * 3 * 4 + 144


def test_report_has_claims_settings_versions_and_figures(report):
    path, text = report
    assert text.count("- R3: CAE-FR2 (Table 8 weights) reconstructs better than CAE:") == 1
    assert text.count("- R3: CAE-FR2 (Table 10 weights) reconstructs better than CAE:") == 1
    assert "Summary: MSE:" in text and "PCC:" in text
    assert "Quick mode" in text and "NOT the paper's protocol" in text and "simulated" in text
    assert "batch size" in text and "validation split" in text and "torch " in text and "scipy " in text
    assert "this invocation: 12 s" in text
    for name in ("figure2.png", "figure3.png", "figure4.png"):
        assert (path.parent / name).stat().st_size > 0 and f"({name})" in text


def test_report_prints_the_gradient_share_per_model(report):
    _, text = report
    section = text.split("## Gradient share (did beta do anything?)")[1].split("\n## ")[0]
    fr2 = preset_arm("table8", 3, "cae-fr", 2)
    shares = [_share(fr2, s) for s in SEEDS]
    expected = (f"| CAE-FR2 | 3 | all | 1 : 0.001 (table8) | {np.mean(shares):.3g} "
                f"({min(shares):.3g}..{max(shares):.3g}) |")
    assert expected in section
    assert "| CAE | 3 | all | 1 : 0 | n/a (no response term) |" in section
    assert "| CNN-FR2 | 1 | all | 0 : 1 | 1 (1..1) |" in section
    n_arms = len({arm for layout in layouts_for("all") for arm in layout.arms()})
    assert section.count("\n| ") == n_arms + 1          # header + one line per configuration


def _claim_rows(better, worse, metric):
    return {"better": [{"seed": s, metric: better[s]} for s in SEEDS],
            "worse": [{"seed": s, metric: worse[s]} for s in SEEDS]}


@pytest.mark.parametrize("better, worse, expected", [
    ([0.040, 0.041, 0.043], [0.080, 0.079, 0.084], "supported"),
    ([0.080, 0.079, 0.084], [0.040, 0.041, 0.043], "contradicted"),
    ([0.040, 0.050, 0.043], [0.045, 0.041, 0.046], "not resolved"),
])
def test_claim_verdicts_follow_the_interval(better, worse, expected):
    arm_a, arm_b = preset_arm("table8", 3, "cae-fr", 2), baseline_arm("cae", 3)
    claim = Claim("test", arm_a, arm_b, ("mse",), "table2")
    rows = _claim_rows(better, worse, "mse")

    class OneClaim:
        claims = [claim]

    (result,) = claim_results(OneClaim, lambda arm: rows["better"] if arm == arm_a else rows["worse"])
    diff = np.subtract(better, worse)
    assert result["diff"].mean == pytest.approx(diff.mean())
    assert result["verdict"] == expected
    assert result["paper"] == pytest.approx(0.043 - 0.081)


def test_identical_arms_are_named():
    from daenr_fast.experiments.claims import identical_arms
    from daenr_fast.experiments.tables import table2

    layout = table2((3,))
    fr1, fr2 = preset_arm("table8", 3, "cae-fr", 1), preset_arm("table8", 3, "cae-fr", 2)

    def rows_of(arm):
        base = {"mse": 0.03, "psnr": 23.0, "ssim": 0.5}
        if arm not in (fr1, fr2):
            base = {k: v * (1.1 + 0.1 * arm.layer) for k, v in base.items()}
        elif arm == fr2:
            base = {k: v * (1 + 1e-7) for k, v in base.items()}
        return [dict(base, seed=s) for s in SEEDS]

    assert identical_arms(layout, rows_of) == [
        "- R3: CAE-FR1 and CAE-FR2: MSE/PSNR/SSIM agree within 0.0001 (relative) on all 3 seed(s)."]


def test_identical_arms_name_their_neuron_subsets():
    from daenr_fast.experiments.claims import identical_arms
    from daenr_fast.experiments.tables import table3, table3_parents

    layout = table3((3,))
    parent = table3_parents()[1]
    sig, insig = (preset_arm("table8", 3, "cae-fr", 1, s, parent) for s in ("sig", "insig"))

    def rows_of(arm):
        scale = 1.0 if arm in (sig, insig) else 1.2 + 0.1 * arm.layer + {"all": 0, "sig": 1, "insig": 2}[arm.subset]
        return [dict(mse=0.03 * scale, psnr=23.0 * scale, ssim=0.5 * scale, seed=s) for s in SEEDS]

    assert identical_arms(layout, rows_of) == [
        "- R3: CAE-FR1 (sig neurons) and CAE-FR1 (insig neurons): MSE/PSNR/SSIM agree within 0.0001 (relative) "
        "on all 3 seed(s)."]
