"""The GPU backend order of every op as data: ``daenr_fast/dispatch_table.json``, its loader, and its derivation
from GPU benchmark results (``daenr bench --device cuda`` JSON files, as in ``benchmarks/results/gpu``).

The file holds, per op and dtype class (``"float32"``, or ``"half"`` for float16/bfloat16), steps
``{"up_to": W, "order": [backends, fastest first]}``: a call of at most W units of work (the ``work`` the op
passes to :func:`daenr_fast._dispatch.resolve_backend`, see :data:`WORK`) uses that order; the last step has
``"up_to": null`` (no bound). Each op and class may carry a ``"note"`` saying what was measured.

Derivation (:func:`derive`): for every op, dtype and size tier in the results (the ``half`` class from bfloat16
results where there are any, else float16), the backends that ran (status ``ok``) are ranked by median time of
the tier's forward+backward case (forward where an op has no backward); a fused backend within ``tie``
(relative) of a faster reference is put before it, since the fused backends hold less memory. Tiers sorted by work whose orders agree merge into one step; between two steps the bound is the geometric
mean of the two tiers' work, to one significant digit. Ops and classes without results keep their entries.

``python -m daenr_fast.dispatch_table RESULTS_DIR [--out FILE]`` prints the derived table (JSON), or with ``--out``
writes it and prints its steps: ``--out daenr_fast/dispatch_table.json`` refreshes the package's table.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable, Optional

TABLE_PATH = Path(__file__).with_name("dispatch_table.json")
KINDS = ("float32", "half")
HALF_DTYPES = ("float16", "bfloat16")
REFERENCE = "torch"
DEFAULT_TIE = 0.05

#: op -> work of a call from its benchmark shape (the ``work=`` each op passes to dispatch).
WORK: dict[str, Callable[[dict], float]] = {
    "factorized_readout": lambda s: s["B"] * s["C"] * s["H"] * s["W"] * s["N"],
    "gaussian_readout": lambda s: 4 * s["B"] * s["C"] * s["N"],
    "poisson_loss": lambda s: s["B"] * s["N"],
    "vq_lookup": lambda s: s["M"] * s["K"] * s["D"],
}

#: ``daenr bench`` op name -> op name.
BENCH_OPS = {"readout": "factorized_readout", "gaussian": "gaussian_readout", "poisson": "poisson_loss",
             "vq": "vq_lookup"}

Steps = tuple[tuple[float, tuple[str, ...]], ...]


class TableError(ValueError):
    """A dispatch table or results file that does not have the expected form; the message says where."""


def load(path: Path | str = TABLE_PATH, backends: Optional[tuple[str, ...]] = None) -> dict[str, dict[str, Steps]]:
    """op -> class -> ((up to this much work, order), ...) from the table file at ``path``, checked: both classes
    for every op, bounds growing and the last one unbounded, every order a permutation of ``backends`` (default:
    the GPU backends and the reference, ``cuda``, ``triton``, ``torch``)."""
    path = Path(path)
    backends = tuple(sorted(backends or ("cuda", "triton", REFERENCE)))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"dispatch table {path} is missing") from None
    except json.JSONDecodeError as err:
        raise TableError(f"dispatch table {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ops"), dict):
        raise TableError(f"dispatch table {path}: expected an object with an 'ops' object")
    table = {}
    for op, kinds in data["ops"].items():
        if not isinstance(kinds, dict) or set(kinds) - {"note"} != set(KINDS):
            raise TableError(f"dispatch table {path}: {op} must have the classes {KINDS}")
        table[op] = {kind: _steps(path, op, kind, kinds[kind], backends) for kind in KINDS}
    return table


def _steps(path, op: str, kind: str, entry, backends) -> Steps:
    where = f"dispatch table {path}: {op} {kind}"
    steps = entry.get("steps") if isinstance(entry, dict) else None
    if not isinstance(steps, list) or not steps:
        raise TableError(f"{where}: expected {{'steps': [{{'up_to': ..., 'order': [...]}}, ...]}}")
    out, previous = [], -math.inf
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or set(step) - {"up_to", "order", "note"} or "order" not in step \
                or "up_to" not in step:
            raise TableError(f"{where} step {i}: expected keys 'up_to' and 'order' (and optionally 'note')")
        limit = math.inf if step["up_to"] is None else step["up_to"]
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not limit > previous:
            raise TableError(f"{where} step {i}: 'up_to' must be a number above the previous step's, got "
                             f"{step['up_to']!r}")
        if (limit == math.inf) != (i == len(steps) - 1):
            raise TableError(f"{where}: only the last step has 'up_to': null (no bound)")
        order = step["order"]
        if not isinstance(order, list) or sorted(order) != list(backends):
            raise TableError(f"{where} step {i}: 'order' must list each of {list(backends)} once, got {order!r}")
        out.append((float(limit), tuple(order)))
        previous = limit
    return tuple(out)


# ------------------------------------------------------------------------------------------------ derivation

def _shape(text: str) -> dict:
    """``"B=64,C=48"`` -> {"B": 64, "C": 48}."""
    try:
        return {k: int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise TableError(f"shape {text!r} is not of the form 'B=64,N=103'") from None


def measurements(results: list[dict], tie: float = DEFAULT_TIE) -> dict[tuple[str, str], list[tuple[float, tuple]]]:
    """(op, class) -> [(work, order)] per measured tier, from ``daenr bench`` result rows."""
    if tie < 0:
        raise ValueError(f"tie must be >= 0, got {tie}")
    cases: dict[tuple, dict[str, float]] = {}
    for row in results:
        op = BENCH_OPS.get(row.get("op"))
        if op is None or row.get("kind") != "backend" or row.get("status") != "ok" or row.get("median_ms") is None:
            continue
        kind = "half" if row["dtype"] in HALF_DTYPES else "float32"
        key = (op, kind, row["dtype"], row["size"], row["shape"], row["mode"])
        cases.setdefault(key, {})[row["impl"].removeprefix("daenr:")] = float(row["median_ms"])
    tiers: dict[tuple, list] = {}
    for (op, kind, dtype, size, shape, mode), times in cases.items():
        tiers.setdefault((op, kind, dtype, size, shape), []).append((mode, times))
    chosen = {}  # (op, class) -> the one dtype measured for it: float32, or bfloat16 before float16
    for op, kind, dtype, *_ in tiers:
        if chosen.get((op, kind)) != "bfloat16":
            chosen[(op, kind)] = dtype
    out: dict[tuple[str, str], list] = {}
    for (op, kind, dtype, size, shape), modes in sorted(tiers.items()):
        if dtype != chosen[(op, kind)]:
            continue
        mode, times = max(modes, key=lambda m: ("bwd" in m[0], len(m[1])))
        out.setdefault((op, kind), []).append((float(WORK[op](_shape(shape))), _rank(times, tie)))
    return out


def _rank(times: dict[str, float], tie: float) -> tuple[str, ...]:
    """Backends fastest first, except that the reference goes behind every fused backend within ``tie`` of it."""
    by_time = sorted(times, key=times.get)
    if REFERENCE not in times:
        return tuple(by_time)
    ref = times[REFERENCE]
    before = [b for b in by_time if b != REFERENCE and times[b] <= ref * (1 + tie)]
    return tuple(before + [REFERENCE] + [b for b in by_time if b != REFERENCE and b not in before])


def _bound(low: float, high: float) -> float:
    """The geometric mean of two works, to one significant digit."""
    mean = math.sqrt(low * high)
    scale = 10 ** math.floor(math.log10(mean))
    return round(mean / scale) * scale


def derive(results: list[dict], base: Optional[dict] = None, tie: float = DEFAULT_TIE,
           source: str = "") -> dict:
    """A table (the JSON form of :data:`TABLE_PATH`) from ``daenr bench`` result rows; the ops and classes
    without any measured backend keep their entries of ``base`` (default: the package's table file)."""
    base = json.loads(TABLE_PATH.read_text(encoding="utf-8")) if base is None else base
    table = json.loads(json.dumps(base))
    if source:
        table["source"] = source
    for (op, kind), tiers in measurements(results, tie).items():
        most = max(len(order) for _, order in tiers)
        steps = []
        for work, order in sorted(t for t in tiers if len(t[1]) == most):  # tiers where every backend ran
            if steps and tuple(steps[-1]["order"]) == order:
                steps[-1]["_work"].append(work)
                continue
            if steps:
                steps[-1]["up_to"] = _bound(steps[-1]["_work"][-1], work)
            steps.append({"up_to": None, "order": list(order), "_work": [work]})
        for step in steps:
            works = step.pop("_work")
            step["note"] = "measured at work " + ", ".join(f"{w:.2g}" for w in works)
        table.setdefault("ops", {}).setdefault(op, {})[kind] = {"steps": steps}
    return table


def read_results(paths: list[Path | str]) -> list[dict]:
    """Result rows of ``daenr bench`` JSON files; a directory stands for every ``*.json`` below it."""
    rows = []
    for path in map(Path, paths):
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"no results: {path} has no JSON files")
        for file in files:
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise FileNotFoundError(f"results file {file} is missing") from None
            if isinstance(data, dict) and isinstance(data.get("results"), list) and \
                    (data.get("meta") or {}).get("device") == "cuda":
                rows.extend(data["results"])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daenr_fast.dispatch_table",
                                     description="Derive the GPU dispatch table from `daenr bench --device cuda` "
                                                 "results.")
    parser.add_argument("results", nargs="+", help="results JSON files or directories (e.g. benchmarks/results/gpu)")
    parser.add_argument("--out", help="write the table here (daenr_fast/dispatch_table.json refreshes the package's)")
    parser.add_argument("--tie", type=float, default=DEFAULT_TIE, help="relative margin within which a fused "
                                                                      "backend goes before the reference")
    args = parser.parse_args(argv)
    rows = read_results(args.results)
    if not rows:
        parser.error(f"no `daenr bench --device cuda` results in {args.results}")
    table = derive(rows, tie=args.tie, source=f"derived from {', '.join(args.results)}")
    text = json.dumps(table, indent=1) + "\n"
    if not args.out:
        print(text, end="")
        return 0
    Path(args.out).write_text(text, encoding="utf-8")
    for op, kinds in load(args.out).items():  # what was written must load
        for kind, steps in kinds.items():
            print(f"{op:20s} {kind:8s} " + "; ".join(f"<= {limit:.0e}: {', '.join(order)}" if limit != math.inf
                                                     else f"above: {', '.join(order)}" for limit, order in steps))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
