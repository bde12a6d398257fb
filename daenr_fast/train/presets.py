"""The paper's alpha:beta settings (Appendix Tables 8-13) by name.

A preset name is ``tableT:regionR:MODELi``, e.g. ``table8:region3:cae-fr2`` (Table 8, region 3, CAE-FR with the
readout at h2) or ``table13:region3:vq-vae-fm4``; case is ignored. Tables 8 and 9 cover CAE-FR1..4 in all
regions, Table 10 all nine variants in region 3, Tables 11 / 12 / 13 all nine variants in region 1 / 2 / 3.
The values live in ``daenr_fast/experiments/alpha_beta_presets.csv`` (transcribed from the paper).

Every preset records the loss scaling its weights were fitted for (:data:`~daenr_fast.train.config.PAPER_SCALING`:
reconstruction error averaged over pixels, response loss summed over neurons); :func:`check_scaling` warns once
when a run uses a preset's weights under another scaling.
"""
from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from importlib import resources
import warnings
from typing import Dict, Tuple

from daenr_fast.train.config import PAPER_SCALING

PRESET_FILE = "alpha_beta_presets.csv"
_NAME = re.compile(r"^(table\d+):region(\d):([a-z-]+?)(\d)$")


@dataclass(frozen=True)
class Preset:
    """One row of Tables 8-13: the experiment (``ir`` image reconstruction, ``ns`` neural similarity),
    the region, model name, readout layer, the loss weights and the loss scaling they assume."""

    name: str
    table: str
    task: str
    region: int
    model: str
    layer: int
    alpha: float
    beta: float
    recon_reduction: str = PAPER_SCALING[0]
    response_reduction: str = PAPER_SCALING[1]

    @property
    def scaling(self) -> Tuple[str, str]:
        """(recon_reduction, response_reduction) the weights were fitted for."""
        return self.recon_reduction, self.response_reduction

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


class ScalingWarning(UserWarning):
    """A preset's alpha:beta used under a loss scaling it was not fitted for."""


def check_scaling(preset_name, recon_reduction: str, response_reduction: str) -> bool:
    """Warn (:class:`ScalingWarning`, once per call) when ``preset_name``'s weights run under another scaling than
    the one they assume; returns whether the scalings match. No preset (None or empty): nothing to check."""
    if not preset_name:
        return True
    preset = get_preset(preset_name)
    if (recon_reduction, response_reduction) == preset.scaling:
        return True
    warnings.warn(f"preset {preset.name} assumes recon_reduction={preset.recon_reduction!r} and "
                  f"response_reduction={preset.response_reduction!r}; with {recon_reduction!r} / "
                  f"{response_reduction!r} its alpha:beta weigh the two terms differently than in the paper",
                  ScalingWarning, stacklevel=3)
    return False
