"""``daenr reproduce`` and ``daenr demo`` end to end on a tiny data set with a few steps per run."""
import csv
import json

import pytest

from daenr_fast.cli import main


@pytest.fixture(scope="module")
def reproduced(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    args = ["reproduce", "table2", "--data", tiny_data, "--regions", "3", "--seeds", "2", "--quick",
            "--max-steps", "2", "--jobs", "1", "--threads", "1", "--device", "cpu", "--out", str(out)]
    return out, args, main(args)


def test_reproduce_writes_rows_report_and_figures(reproduced, capsys):
    out, _, status = reproduced
    assert status == 0
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and {r["label"] for r in rows} == {"CAE", "CAE-FR1", "CAE-FR2", "CAE-FR3", "CAE-FR4"}
    assert all(r["status"] == "ok" and r["steps"] == "2" for r in rows)
    text = (out / "table2" / "report.md").read_text()
    assert "| CAE-FR2 |" in text and "(0.0430)" in text and "Quick mode" in text
    assert text.count("(Table 8 weights) reconstructs better than CAE:") == 4
    assert (out / "table2" / "figure2.png").exists() and (out / "table2" / "figure3.png").exists()


def test_rerun_reuses_every_run(reproduced, capsys):
    out, args, _ = reproduced
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "reusing 10 of 10 finished runs" in printed and "(0 trained, 10 reused, 0 failed)" in printed


def test_demo_prints_the_comparison(tiny_data, tmp_path, capsys):
    assert main(["demo", "--data", tiny_data, "--out", str(tmp_path), "--jobs", "1", "--max-steps", "2"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("model"))
    for column in ("MSE", "PSNR", "SSIM", "PCC", "significant", "noise-ceiling fraction"):
        assert column in header
    assert any(line.startswith("CAE-FR2 ") for line in printed.splitlines())
    assert (tmp_path / "demo.png").stat().st_size > 0


def test_unknown_target_is_refused(capsys):
    with pytest.raises(SystemExit) as err:
        main(["reproduce", "table9"])
    assert err.value.code == 2


def test_loss_scaling_override_reaches_every_run(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    args = ["reproduce", "table2", "--data", tiny_data, "--regions", "3", "--seeds", "1", "--quick",
            "--max-steps", "2", "--jobs", "1", "--threads", "1", "--device", "cpu", "--out", str(out),
            "--recon-reduction", "sum", "--response-reduction", "mean"]
    assert main(args) == 0
    configs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/config.json")]
    assert len(configs) == 5
    assert {(c["recon_reduction"], c["response_reduction"]) for c in configs} == {("sum", "mean")}
    assert "recon_reduction sum, response_reduction mean" in (out / "table2" / "report.md").read_text()


def test_unknown_loss_scaling_is_refused(capsys):
    with pytest.raises(SystemExit) as err:
        main(["reproduce", "table2", "--recon-reduction", "median"])
    assert err.value.code == 2
    assert "sum" in capsys.readouterr().err


def test_only_trains_the_matching_configurations_and_report_only_trains_nothing(tiny_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    base = ["reproduce", "table3", "--data", tiny_data, "--regions", "3", "--seeds", "1", "--quick", "--max-steps",
            "2", "--jobs", "1", "--threads", "1", "--device", "cpu", "--out", str(out)]
    assert main(base + ["--only", "CAE-FR2"]) == 0
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # CAE-FR2 on the significant and insignificant neurons (one subset may be empty: a skipped row), plus the
    # all-neuron CAE-FR2 run they come from
    assert sorted((r["label"], r["subset"]) for r in rows) == [("CAE-FR2", "all"), ("CAE-FR2", "insig"),
                                                               ("CAE-FR2", "sig")]
    report = (out / "table3" / "report.md").read_text()
    assert "**Incomplete**: 3 of the 12 runs of this target have ended" in report
    before = (out / "results.csv").read_text()
    capsys.readouterr()
    assert main(base + ["--report-only"]) == 0
    assert (out / "results.csv").read_text() == before  # nothing trained
    assert "report only, from the 3 ended runs" in (out / "table3" / "report.md").read_text()
    assert "report:" in capsys.readouterr().out


def test_only_and_report_only_refuse_what_cannot_apply(tiny_data, tmp_path, capsys):
    base = ["reproduce", "table2", "--data", tiny_data, "--regions", "3", "--quick", "--out", str(tmp_path / "s")]
    assert main(base + ["--only", "VAE*"]) == 2
    assert "--only 'VAE*' matches no configuration of this target; its labels are: CAE, CAE-FR1" in \
        capsys.readouterr().err
    assert main(base + ["--report-only"]) == 2
    assert "needs a sweep folder with a results.csv" in capsys.readouterr().err
    assert main(base + ["--report-only", "--grid", "--only", "CAE"]) == 2
    assert "--report-only trains nothing, so --grid, --only cannot apply; leave them out" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
