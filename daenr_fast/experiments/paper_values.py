"""The paper's published numbers (Tables 2-7), as shipped in ``paper_tables.json``.

Every value is a *published* number copied from the paper (via ``shared/paper/tables.md``); nothing here is
measured. One record per table cell::

    {"table": "table2", "region": 3, "model": "CAE-FR2", "subset": "all", "metric": "mse", "value": 0.043}

``model`` is the paper's label (:func:`daenr_fast.models.registry.display_name`), ``subset`` is ``all``,
``sig`` or ``insig`` (Table 3), ``metric`` one of ``mse``, ``psnr``, ``ssim``, ``pcc``.

Regenerate the JSON from the transcription with::

    python -m daenr_fast.experiments.paper_values PATH/tables.md
"""
from __future__ import annotations

import functools
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Tuple

JSON_NAME = "paper_tables.json"
IR_METRICS = ("mse", "psnr", "ssim")
Key = Tuple[str, int, str, str, str]


def _sections(text: str) -> Dict[str, List[List[str]]]:
    """``{"table2": [[cell, ...], ...], ...}``: the body rows of each ``## Table N`` markdown table."""
    out: Dict[str, List[List[str]]] = {}
    current: Optional[str] = None
    for line in text.splitlines():
        head = re.match(r"^##+\s+Tables?\s+(\d+)", line)
        if head:
            current = f"table{head.group(1)}"
            out.setdefault(current, [])
            continue
        if current and line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            out[current].append([c.strip() for c in line.strip().strip("|").split("|")])
    return {name: rows[1:] for name, rows in out.items()}  # drop header rows


def _rec(table, region, model, subset, metric, value) -> dict:
    return {"table": table, "region": int(region), "model": model, "subset": subset, "metric": metric,
            "value": float(value)}


def parse_tables_md(text: str) -> List[dict]:
    """Parse the transcription of Tables 2-6 into records (module docstring)."""
    sec = _sections(text)
    records: List[dict] = []
    for row in sec["table2"]:
        for k, value in enumerate(row[1:]):
            records.append(_rec("table2", k // 3 + 1, row[0], "all", IR_METRICS[k % 3], value))
    t3_cols = [("mse", "sig"), ("mse", "insig"), ("ssim", "sig"), ("ssim", "insig"), ("psnr", "sig"),
               ("psnr", "insig")]
    for row in sec["table3"]:
        for (metric, subset), value in zip(t3_cols, row[1:]):
            records.append(_rec("table3", 3, row[0], subset, metric, value))
    for row in sec["table4"]:
        labels = [f"{kind}-FR{i}" for i in range(1, 5) for kind in ("CNN", "CAE")]
        for label, value in zip(labels, row[1:]):
            records.append(_rec("table4", int(row[0]), label, "all", "pcc", value))
    baselines = re.search(r"Baselines do not depend on i:(.*)", text).group(1)
    for name, triple in re.findall(r"([A-Z-]+) (\d+\.\d+ / \d+\.\d+ / \d+\.\d+)", baselines):
        for metric, value in zip(IR_METRICS, triple.split(" / ")):
            records.append(_rec("table5", 3, name, "all", metric, value))
    for row in sec["table5"]:
        for layer, cell in enumerate(row[1:], start=1):
            for metric, value in zip(IR_METRICS, cell.split(" / ")):
                records.append(_rec("table5", 3, f"{row[0]}{layer}", "all", metric, value))
    for row in sec["table6"]:
        for k, value in enumerate(row[1:]):
            records.append(_rec("table6", k // 4 + 1, f"{row[0]}{k % 4 + 1}", "all", "pcc", value))
    return records


@functools.lru_cache(maxsize=1)
def paper_values() -> Dict[Key, float]:
    """``{(table, region, model, subset, metric): published value}`` from the packaged JSON."""
    text = resources.files("daenr_fast.experiments").joinpath(JSON_NAME).read_text(encoding="utf-8")
    return {(r["table"], r["region"], r["model"], r["subset"], r["metric"]): r["value"]
            for r in json.loads(text)["records"]}


def paper_value(table: str, region: int, model: str, metric: str, subset: str = "all") -> Optional[float]:
    """The published value of one cell, or None when the paper has none."""
    return paper_values().get((table, int(region), model, subset, metric))


def write_json(tables_md: Path, out: Path) -> int:
    """Parse ``tables_md`` and write the records to ``out``; returns the number of records."""
    records = parse_tables_md(Path(tables_md).read_text(encoding="utf-8"))
    payload = {"source": "DAE-NR paper, Tables 2-6 (published values, transcribed in paper/tables.md)",
               "records": records}
    lines = ",\n".join(json.dumps(r) for r in records)
    Path(out).write_text(f'{{"source": {json.dumps(payload["source"])},\n"records": [\n{lines}\n]}}\n',
                         encoding="utf-8")
    return len(records)


if __name__ == "__main__":
    target = Path(__file__).with_name(JSON_NAME)
    print(f"wrote {write_json(Path(sys.argv[1]), target)} records to {target}")
