"""Claim verdicts: each paper claim tested on our paired runs, printed as one plain line."""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Dict, List, Sequence

from daenr_fast.experiments.paper_values import paper_value
from daenr_fast.experiments.stats import by_seed, paired_difference, verdict
from daenr_fast.experiments.tables import LOWER_IS_BETTER, METRIC_LABEL, Arm, Claim, Layout

FORMAT = {"mse": ".4f", "psnr": ".2f", "ssim": ".3f", "pcc": ".3f"}


def _paper_diff(claim: Claim, metric: str) -> float:
    """The paper's own difference (better - worse) for this claim, NaN where the paper has no pair."""
    def value(arm: Arm):
        if claim.paper_table == "table3":
            return paper_value("table3", 3, arm.parent.label, metric, arm.subset)
        return paper_value(claim.paper_table, arm.region, arm.label, metric)
    a, b = value(claim.better), value(claim.worse)
    return a - b if a is not None and b is not None else math.nan


def claim_results(layout: Layout, rows_of: Callable[[Arm], List[dict]]) -> List[dict]:
    """One dict per (claim, metric): the paired difference interval, its verdict and the paper's difference."""
    out = []
    for claim in layout.claims:
        better, worse = rows_of(claim.better), rows_of(claim.worse)
        for metric in claim.metrics:
            diff = paired_difference(by_seed(better, metric), by_seed(worse, metric))
            out.append({"claim": claim, "metric": metric, "diff": diff,
                        "verdict": verdict(diff, LOWER_IS_BETTER[metric]), "paper": _paper_diff(claim, metric)})
    return out


def _fmt(value: float, spec: str) -> str:
    return "nan" if not math.isfinite(value) else format(value, "+" + spec)


def claim_lines(results: Sequence[dict]) -> List[str]:
    """Markdown bullet lines: one per claim, every metric with difference, interval, paper's difference, verdict."""
    lines, by_claim = [], {}
    for r in results:
        by_claim.setdefault(r["claim"], []).append(r)
    for claim, items in by_claim.items():
        parts = []
        for r in items:
            spec, d = FORMAT[r["metric"]], r["diff"]
            interval = (f"[{_fmt(d.low, spec)}, {_fmt(d.high, spec)}]" if d.n >= 2 else "(no interval)")
            parts.append(f"{METRIC_LABEL[r['metric']]} diff {_fmt(d.mean, spec)} {interval}, n={d.n}, paper "
                         f"{_fmt(r['paper'], spec)} -> **{r['verdict']}**")
        lines.append(f"- {claim.text}: " + "; ".join(parts))
    return lines


def identical_arms(layout: Layout, rows_of: Callable[[Arm], List[dict]],
                   metrics: Sequence[str] = ("mse", "psnr", "ssim"), rel_tol: float = 1e-4) -> List[str]:
    """Lines naming pairs of arms (same region) whose ``metrics`` agree within ``rel_tol`` on every seed.

    Such a pair means the part in which the two arms differ (e.g. the readout layer at a tiny beta) did not
    change those numbers at all, so their differences to a third arm come from elsewhere (initialisation).
    """
    arms = list(dict.fromkeys(c.arm for _, cells in layout.rows for c in cells if c is not None))
    values = {}
    for arm in arms:
        rows = [r for r in rows_of(arm) if all(r.get(m) not in (None, "") for m in metrics)]
        per_seed = {int(r["seed"]): [float(r[m]) for m in metrics] for r in rows}
        if per_seed:
            values[arm] = per_seed
    lines = []
    for k, a in enumerate(arms):
        for b in arms[k + 1:]:
            if a in values and b in values and a.region == b.region:
                common = set(values[a]) & set(values[b])
                if common and all(math.isclose(x, y, rel_tol=rel_tol) for s in common
                                  for x, y in zip(values[a][s], values[b][s])):
                    lines.append(f"- R{a.region}: {_named(a)} and {_named(b)}: "
                                 f"{'/'.join(METRIC_LABEL[m] for m in metrics)} agree within {rel_tol:g} (relative) "
                                 f"on all {len(common)} seed(s).")
    return lines


def _named(arm: Arm) -> str:
    """The arm's label, with its neuron subset unless it uses all neurons."""
    return arm.label if arm.subset == "all" else f"{arm.label} ({arm.subset} neurons)"


def summary_line(results: Sequence[dict]) -> str:
    """Counts of verdicts per metric, e.g. ``MSE: 3 supported, 9 not resolved (of 12)``."""
    per: Dict[str, Counter] = {}
    for r in results:
        per.setdefault(r["metric"], Counter())[r["verdict"]] += 1
    chunks = []
    for metric, counts in per.items():
        order = ("supported", "not resolved", "contradicted", "untestable")
        body = ", ".join(f"{counts[v]} {v}" for v in order if counts[v])
        chunks.append(f"{METRIC_LABEL[metric]}: {body} (of {sum(counts.values())})")
    return "; ".join(chunks)
