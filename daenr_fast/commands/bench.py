"""``daenr bench``: benchmark the fused ops (and end-to-end training) and save tables, JSON, CSV and plots.

Examples::

    daenr bench                                   # every op, every size, on CPU -> benchmarks/results/cpu/
    daenr bench --ops readout --sizes paper,mid   # one op, two size tiers
    daenr bench --device cuda --out benchmarks/results/gpu
    daenr bench --quick --ops readout --sizes paper --out /tmp/b   # a fast smoke run
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

NAME = "bench"
HELP = "benchmark the fused ops and end-to-end training; print tables and save JSON, CSV, Markdown and PNG"

ALL_OPS = ("readout", "gaussian", "poisson", "vq", "e2e")


def add_arguments(parser) -> None:
    parser.add_argument("--ops", default=",".join(ALL_OPS),
                        help=f"comma-separated subset of {','.join(ALL_OPS)} (default: all)")
    parser.add_argument("--sizes", default="all",
                        help="comma-separated size tiers: paper, mid, sensorium (readout), sensorium, large "
                             "(gaussian), large (poisson, vq), tiny; 'all' (default) = every tier of each op but tiny")
    parser.add_argument("--modes", default=None, help="comma-separated subset of fwd,fwd+bwd (default: all)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per implementation (default 15)")
    parser.add_argument("--max-time", type=float, default=None,
                        help="seconds of samples per implementation before it stops early (default 20)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/OpenMP threads for every implementation (default: torch's current setting)")
    parser.add_argument("--quick", action="store_true",
                        help="3 repeats, 1 warm-up, no torch.compile, short end-to-end runs: a smoke test")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results/<device>/)")


def _settings(args):
    import torch

    from daenr_fast.bench.runner import Settings

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 15)
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    return Settings(device=args.device, dtype=args.dtype, repeats=repeats, warmup=1 if args.quick else 2,
                    min_sample_s=0.001 if args.quick else 0.005,
                    max_time_s=args.max_time if args.max_time is not None else (2.0 if args.quick else 20.0),
                    compile=not (args.quick or args.no_compile), memory=not args.no_memory,
                    threads=torch.get_num_threads())


def _split(value: str, allowed=None, what: str = "") -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if allowed is not None and v not in allowed]
    if bad or not items:
        raise ValueError(f"{what} must be a comma-separated subset of {','.join(allowed)}, got {value!r}")
    return items


def _argv(args) -> list[str]:
    """The options of ``args`` as a ``daenr bench`` argument list."""
    argv = ["--ops", args.ops, "--sizes", args.sizes, "--device", args.device, "--dtype", args.dtype]
    for flag, value in (("--modes", args.modes), ("--repeats", args.repeats), ("--max-time", args.max_time),
                        ("--threads", args.threads), ("--out", args.out)):
        if value is not None:
            argv += [flag, str(value)]
    for flag, value in (("--quick", args.quick), ("--no-compile", args.no_compile), ("--no-memory", args.no_memory)):
        if value:
            argv.append(flag)
    return argv


def _rerun_with_passive_wait(args) -> int:
    """Run this benchmark in a child process with ``OMP_WAIT_POLICY=PASSIVE``.

    OpenMP reads the wait policy once, at start-up. With the default (spinning) policy, a machine whose cores are
    shared with other processes makes every parallel region wait for descheduled spinning threads: a 15x24 by
    24x7 ``torch.mm`` then takes tens of milliseconds, and every timing measures the load, not the code.
    """
    import subprocess

    print("daenr bench: running with OMP_WAIT_POLICY=PASSIVE (set OMP_WAIT_POLICY to choose another policy)",
          flush=True)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run([sys.executable, "-m", "daenr_fast.cli", "bench", *_argv(args)], env=env).returncode


def run(args) -> int:
    ops = _split(args.ops, ALL_OPS, "--ops")
    modes = None if args.modes is None else _split(args.modes, ("fwd", "fwd+bwd"), "--modes")
    out = Path(args.out) if args.out else Path("benchmarks") / "results" / args.device
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder")
    if args.device == "cpu" and "OMP_WAIT_POLICY" not in os.environ:
        return _rerun_with_passive_wait(args)
    import torch

    from daenr_fast import bench
    from daenr_fast.bench import end_to_end, report, runner

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to torch")
    settings = _settings(args)
    sizes = None if args.sizes == "all" else _split(args.sizes, what="--sizes")
    command = ["daenr", "bench", *_argv(args)]
    for op in ops:
        meta = report.run_metadata(args.device, settings.threads, command)
        meta["loadavg_before"] = [round(v, 2) for v in os.getloadavg()]
        meta["settings"] = vars(settings)
        if op == "e2e":
            rows = end_to_end.run(settings, quick=args.quick)
            meta["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
            print(end_to_end.format_table(rows))
            paths = end_to_end.save(out, meta, rows)
        else:
            module = bench.OPS[op]
            tiers = sizes if sizes is not None else [s for s in module.SIZES if s != "tiny"]
            rows = runner.run_op(module, tiers, modes, settings, log=lambda m: print(m, flush=True))
            meta["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
            if not rows:
                continue
            print(report.format_table(rows), flush=True)
            paths = report.save(out, op, meta, rows)
        print("wrote " + ", ".join(str(p) for p in paths), flush=True)
    return 0
