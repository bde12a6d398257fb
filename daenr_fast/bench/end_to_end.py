"""End-to-end training throughput: the fused ops vs the same model on the ``torch`` backend.

Models (random data of the right shapes; one step = zero_grad, forward, loss, backward, Adam step):

* ``CAE-FR2`` - :func:`daenr_fast.models.build_model` ``("cae-fr", layer=2, n_neurons=103)`` at the paper's size,
  batch 64 of 1x32x32 images, loss from :func:`daenr_fast.train.loss_terms` (reconstruction + beta * Poisson);
* ``sensorium readout`` - a two-layer conv core (1x36x64 images -> 64x28x56), the
  :class:`daenr_fast.nn.FactorizedReadout` to 8000 neurons and the elu1 Poisson loss, batch 32.

Each model runs twice from the same initial weights: with the default dispatch (the fused backend of the device)
and with ``DAENR_FAST_BACKEND=torch`` set during its steps. Both are timed in turns (round robin).

Grids (``CAE-FR2 grid``): G in :data:`GRID_SIZES` CAE-FR2 runs (the trainer's own runs, seeds 0..G-1, on random
data of the paper's shapes) stepped as one grid (:class:`daenr_fast.train.grid.GridTrainer`, once per strategy in
:data:`GRID_STRATEGIES`: one vmapped stacked model, and the members' own steps in a loop) and as G separate runs
stepped one after another (:meth:`daenr_fast.train.trainer.Trainer._step` each), timed in turns; one sample is
one step of every run. Reported: model-steps per second (G / step time), the grid's rate over the G separate
runs' and over one lone run's (the G = 1 separate rate).

Also the wall time of ``daenr demo`` when that command exists. ``--quick`` runs use small batches (CAE-FR2 batch
8; the Sensorium model batch 4 and 256 neurons; grids of 1 and 2 at batch 8) and skip the demo: a smoke test, not
a measurement.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from daenr_fast.bench.timing import time_round_robin

ROW_KEYS = ("benchmark", "config", "variant", "status", "step_ms", "iqr_ms", "steps_per_s", "speedup_vs_torch",
            "models", "model_steps_per_s", "speedup_vs_separate", "speedup_vs_single", "repeats", "loadavg_1m")
#: runs per grid of the grid benchmark (``--quick``: :data:`QUICK_GRID_SIZES`)
GRID_SIZES = (1, 8, 32)
QUICK_GRID_SIZES = (1, 2)
GRID_BENCHMARK = "CAE-FR2 grid"
#: the grid strategies timed (:data:`daenr_fast.train.grid.STRATEGIES` less ``auto``)
GRID_STRATEGIES = ("vmap", "loop")
DEMO_TIMEOUT_S = 1800


@contextmanager
def backend_env(value: str | None):
    """Set (or, with None, unset) ``DAENR_FAST_BACKEND`` inside the block, restoring it afterwards."""
    old = os.environ.get("DAENR_FAST_BACKEND")
    if value is None:
        os.environ.pop("DAENR_FAST_BACKEND", None)
    else:
        os.environ["DAENR_FAST_BACKEND"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DAENR_FAST_BACKEND", None)
        else:
            os.environ["DAENR_FAST_BACKEND"] = old


def cae_fr2(device: torch.device, batch: int = 64, n_neurons: int = 103):
    """(model, step-loss function, batch) of CAE-FR2 at the paper's size."""
    from daenr_fast.models import build_model
    from daenr_fast.train import TrainConfig, loss_terms

    torch.manual_seed(0)
    model = build_model("cae-fr", layer=2, n_neurons=n_neurons).to(device)
    config = TrainConfig(model="cae-fr", layer=2)
    x = torch.rand(batch, 1, 32, 32, device=device) * 2 - 1
    s = torch.poisson(torch.full((batch, n_neurons), 0.5, device=device))

    def loss(m):
        return loss_terms(m, m(x), x, s, config)[0]

    return model, loss, f"batch {batch}, 1x32x32 -> h2 48x16x16 -> {n_neurons} neurons"


class SensoriumReadoutModel(nn.Module):
    """Conv core 1x36x64 -> 64x28x56 (9x9 valid, then 3x3 same; BatchNorm, ELU) and a factorized readout."""

    def __init__(self, n_neurons: int = 8000, channels: int = 64):
        super().__init__()
        from daenr_fast.nn import FactorizedReadout

        self.core = nn.Sequential(
            nn.Conv2d(1, channels, 9), nn.BatchNorm2d(channels), nn.ELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ELU())
        self.readout = FactorizedReadout(in_shape=(channels, 28, 56), outdims=n_neurons, bias=True)

    def forward(self, x):
        return self.readout(self.core(x))


def sensorium_readout(device: torch.device, batch: int = 32, n_neurons: int = 8000):
    """(model, step-loss function, description) of the Sensorium-sized readout model."""
    from daenr_fast import ops

    torch.manual_seed(0)
    model = SensoriumReadoutModel(n_neurons).to(device)
    x = torch.randn(batch, 1, 36, 64, device=device)
    s = torch.poisson(torch.full((batch, n_neurons), 0.5, device=device))
    if hasattr(ops, "poisson_loss"):
        def loss(m):
            return ops.poisson_loss(m(x), s, activation="elu1", reduction="sum") / batch
    else:
        from daenr_fast.ops import reference

        def loss(m):
            return reference.poisson_loss(m(x), s, activation="elu1", reduction="sum") / batch
    return model, loss, f"batch {batch}, 1x36x64 -> core 64x28x56 -> {n_neurons} neurons"


def _step_fn(model, loss, backend: str | None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        with backend_env(backend):
            opt.zero_grad(set_to_none=True)
            value = loss(model)
            value.backward()
            opt.step()
        return value

    return step


def _throughput(name: str, builder, settings, quick: bool, quick_kwargs: dict) -> list[dict]:
    device = torch.device(settings.device)
    try:
        model, loss, config = builder(device, **(quick_kwargs if quick else {}))
    except Exception as err:  # a model that cannot be built yet is reported as such
        return [dict(dict.fromkeys(ROW_KEYS), benchmark=name, status=f"not available: {type(err).__name__}: {err}")]
    variants = {"fused (default dispatch)": _step_fn(model, loss, None),
                "torch backend": _step_fn(copy.deepcopy(model), loss, "torch")}
    stats = time_round_robin(variants, device, repeats=3 if quick else max(5, settings.repeats // 2),
                             warmup=1 if quick else 2, min_sample_s=0.0, max_time_s=settings.max_time_s)
    load = os.getloadavg()[0]
    t_torch = stats["torch backend"].median_s
    return [dict(benchmark=name, config=config, variant=v, status="ok", step_ms=s.median_s * 1e3,
                 iqr_ms=s.iqr_s * 1e3, steps_per_s=1 / s.median_s, speedup_vs_torch=t_torch / s.median_s,
                 repeats=s.repeats, loadavg_1m=load) for v, s in stats.items()]


def _random_splits(n_neurons: int, n_images: int, seed: int = 0):
    """Splits of random 32x32 images and Poisson counts of ``n_neurons`` (the shapes of a paper region)."""
    import numpy as np

    from daenr_fast.data import NeuralDataset, prepare

    rng = np.random.default_rng(seed)
    images = rng.random((n_images + 8, 32, 32))
    rates = np.full((n_images, n_neurons), 0.5)
    return prepare(NeuralDataset(train_images=images[:n_images], train_responses=rng.poisson(rates).astype(np.float32),
                                 test_images=images[n_images:],
                                 test_responses=rng.poisson(0.5, (2, 8, n_neurons)).astype(np.float32),
                                 name="random"), val_fraction=0.2, seed=seed)


def _cae_fr2_runs(count: int, splits, device: torch.device, batch: int):
    """``count`` CAE-FR2 training runs (seeds 0..count-1) ready to step; they never evaluate nor stop."""
    from daenr_fast.train import TrainConfig
    from daenr_fast.train.trainer import open_run

    never = 10 ** 9
    return [open_run(TrainConfig(model="cae-fr", layer=2, batch_size=batch, eval_every=never, patience=never,
                                 max_steps=None, checkpoint_every=never, seed=seed, device=str(device),
                                 progress=False, figures=False), splits, device=device)
            for seed in range(count)]


def grid_throughput(settings, quick: bool = False, sizes=None) -> list[dict]:
    """Rows of the grid benchmark (module docstring): per G, the grid and the G separate runs."""
    from daenr_fast.train.grid import GridTrainer

    device = torch.device(settings.device)
    sizes = tuple(sizes or (QUICK_GRID_SIZES if quick else GRID_SIZES))
    batch, n_neurons = (8, 103) if quick else (64, 103)
    splits = _random_splits(n_neurons, n_images=max(4 * batch, 64))
    config = f"CAE-FR2 x G, batch {batch} each, 1x32x32 -> h2 48x16x16 -> {n_neurons} neurons"
    rows, single = [], None
    for g in sizes:
        separate = _cae_fr2_runs(g, splits, device, batch)
        which = list(range(g))

        def separate_steps(runs=separate):
            for run in runs:
                run._step()

        variants = {f"grid of {g}, {strategy}": (lambda grid=GridTrainer(_cae_fr2_runs(g, splits, device, batch),
                                                                         strategy): grid._step(which))
                    for strategy in GRID_STRATEGIES}
        sep_name = f"{g} separate runs (one after another)"
        variants[sep_name] = separate_steps
        stats = time_round_robin(variants, device, repeats=min(3, settings.repeats) if quick
                                 else max(5, settings.repeats // 3),
                                 warmup=1, min_sample_s=0.0, max_time_s=settings.max_time_s)
        sep_stats = stats[sep_name]
        if single is None and g == 1:
            single = 1 / sep_stats.median_s
        load = os.getloadavg()[0]
        for name, s in stats.items():
            rate = g / s.median_s
            rows.append(dict(benchmark=GRID_BENCHMARK, config=config, variant=name, status="ok",
                             step_ms=s.median_s * 1e3, iqr_ms=s.iqr_s * 1e3, steps_per_s=1 / s.median_s, models=g,
                             model_steps_per_s=rate, speedup_vs_separate=sep_stats.median_s / s.median_s,
                             speedup_vs_single=None if single is None else rate / single, repeats=s.repeats,
                             loadavg_1m=load))
    return rows


def demo_wall_time(quick: bool, device: torch.device) -> dict:
    """Wall time of ``daenr demo`` (a child process), or why it was not run."""
    row = dict(dict.fromkeys(ROW_KEYS), benchmark="daenr demo", variant="default dispatch")
    commands = Path(__file__).resolve().parent.parent / "commands"
    if not (commands / "demo.py").is_file():
        return {**row, "status": "not available: no `daenr demo` command"}
    if quick:
        return {**row, "status": "skipped (--quick)"}
    if device.type != "cpu":
        return {**row, "status": "skipped: daenr demo trains on the CPU; measured in CPU runs"}
    with tempfile.TemporaryDirectory() as out:  # a fresh folder: the demo reuses finished runs it finds
        t0 = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "daenr_fast.cli", "demo", "--out", out],
                                  capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {**row, "status": f"timeout after {DEMO_TIMEOUT_S} s"}
        wall = time.perf_counter() - t0
    status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
    return {**row, "status": status, "config": "daenr demo --out <fresh folder> (wall time of the command)",
            "step_ms": wall * 1e3, "loadavg_1m": os.getloadavg()[0]}


def run(settings, quick: bool = False) -> list[dict]:
    """Rows of every end-to-end benchmark."""
    rows = _throughput("CAE-FR2", cae_fr2, settings, quick, {"batch": 8})
    rows += _throughput("sensorium readout", sensorium_readout, settings, quick, {"batch": 4, "n_neurons": 256})
    rows += grid_throughput(settings, quick)
    rows.append(demo_wall_time(quick, torch.device(settings.device)))
    return rows


def format_table(rows: list[dict]) -> str:
    grid = [r for r in rows if r["benchmark"] == GRID_BENCHMARK]
    rows = [r for r in rows if r["benchmark"] != GRID_BENCHMARK]
    lines = [f"{'benchmark':<18} {'variant':<26} {'step ms':>10} {'IQR ms':>9} {'steps/s':>9} {'vs torch':>9}  status"]
    for r in rows:
        def f(k, spec):
            return "-" if r.get(k) is None else format(r[k], spec)
        lines.append(f"{r['benchmark']:<18} {str(r.get('variant') or '-'):<26} {f('step_ms', '10.1f'):>10} "
                     f"{f('iqr_ms', '9.1f'):>9} {f('steps_per_s', '9.2f'):>9} {f('speedup_vs_torch', '8.2f'):>8}x  "
                     f"{r['status']}")
    if grid:
        lines += ["", f"{'grid':<6} {'variant':<40} {'step ms':>10} {'IQR ms':>9} {'model-steps/s':>14} "
                      f"{'vs separate':>12} {'vs 1 model':>11}"]
        for r in grid:
            single = "-" if r.get("speedup_vs_single") is None else f"{r['speedup_vs_single']:.2f}x"
            lines.append(f"G={r['models']:<4} {r['variant']:<40} {r['step_ms']:>10.1f} {r['iqr_ms']:>9.1f} "
                         f"{r['model_steps_per_s']:>14.2f} {r['speedup_vs_separate']:>11.2f}x {single:>11}")
    return "\n".join(lines)


def save(out_dir: Path, meta: dict, rows: list[dict]) -> list[Path]:
    """Write e2e.json, e2e.csv and e2e.md into ``out_dir``."""
    from daenr_fast.bench import report

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "e2e.json", out_dir / "e2e.csv", out_dir / "e2e.md"]
    report.write_json(paths[0], meta, rows)
    report.write_csv(paths[1], meta, rows, keys=ROW_KEYS)
    load = (f"; load average (1, 5, 15 min) {meta['loadavg_before']} before, {meta['loadavg_after']} after"
            if meta.get("loadavg_before") and meta.get("loadavg_after") else "")
    md = [f"Machine: {meta.get('cpu')} ({meta.get('torch_threads')} threads)"
          + (f", GPU {meta['gpu']}" if meta.get("gpu") else "") + f"; {meta.get('date')}{load}.",
          f"Command: `{meta.get('command')}`", "",
          "| benchmark | config | variant | step ms (IQR) | steps/s | vs torch backend |", "|---|---|---|---|---|---|"]
    grid = [r for r in rows if r["benchmark"] == GRID_BENCHMARK]
    for r in (r for r in rows if r["benchmark"] != GRID_BENCHMARK):
        if r.get("step_ms") is None:
            md.append(f"| {r['benchmark']} | | | {r['status']} | | |")
        else:
            sps = "-" if r.get("steps_per_s") is None else f"{r['steps_per_s']:.2f}"
            vs = "-" if r.get("speedup_vs_torch") is None else f"{r['speedup_vs_torch']:.2f}x"
            iqr = "" if r.get("iqr_ms") is None else f" ({r['iqr_ms']:.3g})"
            md.append(f"| {r['benchmark']} | {r.get('config') or ''} | {r['variant']} | {r['step_ms']:.4g}{iqr} "
                      f"| {sps} | {vs} |")
    if grid:
        md += ["", f"Grids: {grid[0]['config']}; one sample = one step of every run; model-steps/s = G / step time.",
               "", "| G | variant | step ms (IQR) | model-steps/s | vs G separate runs | vs 1 lone run |",
               "|---|---|---|---|---|---|"]
        for r in grid:
            single = "-" if r.get("speedup_vs_single") is None else f"{r['speedup_vs_single']:.2f}x"
            md.append(f"| {r['models']} | {r['variant']} | {r['step_ms']:.4g} ({r['iqr_ms']:.3g}) "
                      f"| {r['model_steps_per_s']:.2f} | {r['speedup_vs_separate']:.2f}x | {single} |")
    paths[2].write_text("\n".join(md) + "\n")
    return paths
