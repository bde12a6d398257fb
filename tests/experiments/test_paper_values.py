"""The packaged paper values: every cell of Tables 2-6, and the parser that produced them."""
import pytest

from daenr_fast.experiments.paper_values import paper_value, paper_values, parse_tables_md


def test_packaged_values_cover_tables_2_to_6():
    counts = {}
    for table, *_ in paper_values():
        counts[table] = counts.get(table, 0) + 1
    assert counts == {"table2": 45, "table3": 24, "table4": 24, "table5": 117, "table6": 144}


@pytest.mark.parametrize("key, value", [
    (("table2", 3, "CAE", "mse"), 0.081), (("table2", 2, "CAE-FR4", "psnr"), 23.491),
    (("table4", 3, "CNN-FR3", "pcc"), 0.372), (("table5", 3, "VQ-VAE", "ssim"), 0.497),
    (("table5", 3, "CAE-FC3", "mse"), 0.061), (("table6", 2, "VQ-VAE-FC4", "pcc"), 0.361),
])
def test_spot_values(key, value):
    assert paper_value(*key) == value


def test_table3_subsets():
    assert paper_value("table3", 3, "CAE-FR1", "mse", "sig") == 0.043
    assert paper_value("table3", 3, "CAE-FR1", "mse", "insig") == 0.125
    assert paper_value("table3", 3, "CAE-FR4", "psnr", "insig") == 19.628
    assert paper_value("table3", 3, "CAE-FR1", "mse") is None


def test_parser_on_a_snippet():
    text = "\n".join([
        "## Table 2 — IR", "| model | R1 MSE | R1 PSNR | R1 SSIM |", "|---|---|---|---|",
        "| CAE | 0.5 | 20.0 | 0.7 |",
        "## Table 3 — sig", "| model | a | b | c | d | e | f |", "|---|---|---|---|---|---|---|",
        "| CAE-FR1 | 1 | 2 | 3 | 4 | 5 | 6 |",
        "## Table 4 — PCC", "| region | x |", "|---|---|", "| 2 | 0.1 | 0.2 |",
        "## Table 5 — IR", "Baselines do not depend on i: CAE 0.1 / 17.2 / 0.5.",
        "| model | h1 |", "|---|---|", "| VAE-FR | 0.2 / 16.1 / 0.4 |",
        "## Table 6 — PCC", "| model | R1 h1 |", "|---|---|", "| CNN-FM | 0.15 |",
    ])
    records = {(r["table"], r["region"], r["model"], r["subset"], r["metric"]): r["value"]
               for r in parse_tables_md(text)}
    assert records[("table2", 1, "CAE", "all", "psnr")] == 20.0
    assert records[("table3", 3, "CAE-FR1", "insig", "ssim")] == 4.0
    assert records[("table4", 2, "CAE-FR1", "all", "pcc")] == 0.2
    assert records[("table5", 3, "CAE", "all", "psnr")] == 17.2
    assert records[("table5", 3, "VAE-FR1", "all", "ssim")] == 0.4
    assert records[("table6", 1, "CNN-FM1", "all", "pcc")] == 0.15
