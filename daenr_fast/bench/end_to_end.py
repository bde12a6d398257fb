"""End-to-end training throughput: the fused ops vs the same model on the ``torch`` backend.

Models (random data of the right shapes; one step = zero_grad, forward, loss, backward, Adam step):

* ``CAE-FR2`` - :func:`daenr_fast.models.build_model` ``("cae-fr", layer=2, n_neurons=103)`` at the paper's size,
  batch 64 of 1x32x32 images, loss from :func:`daenr_fast.train.loss_terms` (reconstruction + beta * Poisson);
* ``sensorium readout`` - a two-layer conv core (1x36x64 images -> 64x28x56), the
  :class:`daenr_fast.nn.FactorizedReadout` to 8000 neurons and the elu1 Poisson loss, batch 32.

Each model runs twice from the same initial weights: with the default dispatch (the fused backend of the device)
and with ``DAENR_FAST_BACKEND=torch`` set during its steps. Both are timed in turns (round robin).
Also the wall time of ``daenr demo`` when that command exists. ``--quick`` runs use small batches (CAE-FR2 batch
8; the Sensorium model batch 4 and 256 neurons) and skip the demo: a smoke test, not a measurement.
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
            "repeats", "loadavg_1m")
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
    rows.append(demo_wall_time(quick, torch.device(settings.device)))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'benchmark':<18} {'variant':<26} {'step ms':>10} {'IQR ms':>9} {'steps/s':>9} {'vs torch':>9}  status"]
    for r in rows:
        def f(k, spec):
            return "-" if r.get(k) is None else format(r[k], spec)
        lines.append(f"{r['benchmark']:<18} {str(r.get('variant') or '-'):<26} {f('step_ms', '10.1f'):>10} "
                     f"{f('iqr_ms', '9.1f'):>9} {f('steps_per_s', '9.2f'):>9} {f('speedup_vs_torch', '8.2f'):>8}x  "
                     f"{r['status']}")
    return "\n".join(lines)


def save(out_dir: Path, meta: dict, rows: list[dict]) -> list[Path]:
    """Write e2e.json, e2e.csv and e2e.md into ``out_dir``."""
    from daenr_fast.bench import report

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "e2e.json", out_dir / "e2e.csv", out_dir / "e2e.md"]
    report.write_json(paths[0], meta, rows)
    report.write_csv(paths[1], meta, rows, keys=ROW_KEYS)
    md = [f"Machine: {meta.get('cpu')} ({meta.get('torch_threads')} threads)"
          + (f", GPU {meta['gpu']}" if meta.get("gpu") else "") + f"; {meta.get('date')}.",
          f"Command: `{meta.get('command')}`", "",
          "| benchmark | config | variant | step ms (IQR) | steps/s | vs torch backend |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("step_ms") is None:
            md.append(f"| {r['benchmark']} | | | {r['status']} | | |")
        else:
            sps = "-" if r.get("steps_per_s") is None else f"{r['steps_per_s']:.2f}"
            vs = "-" if r.get("speedup_vs_torch") is None else f"{r['speedup_vs_torch']:.2f}x"
            iqr = "" if r.get("iqr_ms") is None else f" ({r['iqr_ms']:.3g})"
            md.append(f"| {r['benchmark']} | {r.get('config') or ''} | {r['variant']} | {r['step_ms']:.4g}{iqr} "
                      f"| {sps} | {vs} |")
    paths[2].write_text("\n".join(md) + "\n")
    return paths
