"""The paper's alpha:beta settings (Appendix Tables 8-13) by name.

A preset name is ``tableT:regionR:MODELi``, e.g. ``table8:region3:cae-fr2`` (Table 8, region 3, CAE-FR with the
readout at h2) or ``table13:region3:vq-vae-fm4``; case is ignored. Tables 8 and 9 cover CAE-FR1..4 in all
regions, Table 10 all nine variants in region 3, Tables 11 / 12 / 13 all nine variants in region 1 / 2 / 3.
The values live in ``daenr_fast/experiments/alpha_beta_presets.csv`` (transcribed from the paper).
"""
from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Dict, Tuple

PRESET_FILE = "alpha_beta_presets.csv"
_NAME = re.compile(r"^(table\d+):region(\d):([a-z-]+?)(\d)$")


@dataclass(frozen=True)
class Preset:
    """One row of Tables 8-13: the experiment (``ir`` image reconstruction, ``ns`` neural similarity),
    the region, model name, readout layer and the loss weights."""

    name: str
    table: str
    task: str
    region: int
    model: str
    layer: int
    alpha: float
    beta: float

    @property
    def data(self) -> str:
        """The default data spec for this preset (the simulated region)."""
        return f"sim:region{self.region}"


def _read_rows():
    text = resources.files("daenr_fast").joinpath("experiments", PRESET_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(lines))


@functools.lru_cache(maxsize=1)
def presets() -> Dict[str, Preset]:
    """All presets by name, in table order."""
    out = {}
    for row in _read_rows():
        name = f"{row['table']}:region{row['region']}:{row['model']}{row['layer']}"
        out[name] = Preset(name, row["table"], row["task"], int(row["region"]), row["model"], int(row["layer"]),
                           float(row["alpha"]), float(row["beta"]))
    return out


def tables() -> Tuple[str, ...]:
    return tuple(dict.fromkeys(p.table for p in presets().values()))


def get_preset(name: str) -> Preset:
    """Look a preset up by name; an unknown name raises a ``ValueError`` that says what exists."""
    key = str(name).strip().lower()
    table = presets()
    if key in table:
        return table[key]
    match = _NAME.match(key)
    if not match:
        raise ValueError(f"preset {name!r} is not of the form tableT:regionR:MODELi (e.g. table8:region3:cae-fr2)")
    tab, region, model, layer = match.groups()
    if tab not in tables():
        raise ValueError(f"unknown preset table {tab!r}; valid: {', '.join(tables())}")
    in_table = [p for p in table.values() if p.table == tab]
    regions = sorted({p.region for p in in_table})
    layers = {}
    for p in in_table:
        layers.setdefault(p.model, set()).add(p.layer)
    models = ", ".join(f"{m}{{{','.join(map(str, sorted(ls)))}}}" for m, ls in sorted(layers.items()))
    raise ValueError(f"no preset {name!r}: {tab} covers region(s) {', '.join(map(str, regions))} and models "
                     f"{models}")
