"""Dataset specifications understood by :func:`load` (and every ``daenr`` command that takes data)::

    sim:region3            the built-in simulated region 3 (seed 0)
    sim:region3:seed=1     ... another seed
    antolik:PATH/region3   a region folder of the Antolik et al. 2016 layout
    PATH.npz               a file in the generic format (:mod:`.npz_format`)
"""
from __future__ import annotations

import os
import re

from .antolik import load_antolik
from .dataset import NeuralDataset
from .npz_format import load_npz
from .simulate import simulate

FORMS = ("sim:region{1,2,3}[:seed=N]", "antolik:PATH/regionK", "PATH.npz")
_SIM = re.compile(r"^sim:region([0-9]+)(?::seed=([0-9]+))?$")


def _unknown(spec, why: str) -> ValueError:
    return ValueError(f"unknown dataset spec {spec!r} ({why}); accepted forms: {', '.join(FORMS)}")


def parse_sim(spec) -> tuple[int, int] | None:
    """``(region, seed)`` of a ``sim:`` spec, None for any other spec; ``ValueError`` for a malformed ``sim:`` one."""
    if isinstance(spec, os.PathLike) or not isinstance(spec, str) or not spec.startswith("sim:"):
        return None
    match = _SIM.match(spec)
    if not match:
        raise _unknown(spec, "malformed simulated-region spec")
    return int(match.group(1)), int(match.group(2) or 0)


def load(spec) -> NeuralDataset:
    """Load the dataset named by ``spec`` (module docstring); ``ValueError`` listing the forms otherwise."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise _unknown(spec, f"expected a string, got {type(spec).__name__}")
    sim = parse_sim(spec)
    if sim is not None:
        return simulate(region=sim[0], seed=sim[1])
    if spec.startswith("antolik:"):
        path = spec[len("antolik:"):]
        if not path:
            raise _unknown(spec, "no folder given")
        return load_antolik(path)
    if spec.endswith(".npz"):
        return load_npz(spec)
    raise _unknown(spec, "not a sim: or antolik: spec and not a .npz path")
