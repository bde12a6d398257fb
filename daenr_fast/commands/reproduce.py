"""``daenr reproduce TARGET``: train the runs behind a paper table or figure and write ``report.md``."""
from __future__ import annotations

from pathlib import Path

NAME = "reproduce"
HELP = "reproduce the paper's Tables 2-6 / Figures 2-4 (mean and 95% CI over seeds next to the paper's values)"


def add_arguments(parser) -> None:
    from daenr_fast.experiments.executors import EXECUTORS, RAY_INSTALL
    from daenr_fast.experiments.grid_worker import DEFAULT_GRID_SIZE
    sizes = ", ".join(f"{size} on {device}" for device, size in DEFAULT_GRID_SIZE.items())
    from daenr_fast.experiments.tables import TARGETS
    from daenr_fast.train.config import PAPER_SCALING, REDUCTIONS

    parser.add_argument("target", choices=TARGETS, help="table2 ... table6, figures (Figs. 2-4) or all")
    parser.add_argument("--data", default="sim",
                        help="sim (built-in simulated regions, default), antolik:DIR (DIR/region1..3) or a spec")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="short runs (200 steps, patience 100, batch 32) instead of the paper's protocol")
    parser.add_argument("--out", default="daenr-reproduce",
                        help="sweep folder: results.csv, runs/ and TARGET/report.md (default ./daenr-reproduce)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained in parallel local processes (default 1; --executor local only)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default cores / jobs; with --executor ray the CPUs each task "
                             "reserves, default 1)")
    parser.add_argument("--regions", type=int, nargs="+", default=[1, 2, 3], choices=(1, 2, 3),
                        help="regions to include (default 1 2 3)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the protocol's step cap")
    parser.add_argument("--patience", type=int, default=None, help="override the protocol's patience (steps)")
    parser.add_argument("--recon-reduction", choices=REDUCTIONS, default=None,
                        help="override the loss scaling: image term summed or averaged over pixels "
                             f"(default {PAPER_SCALING[0]})")
    parser.add_argument("--response-reduction", choices=REDUCTIONS, default=None,
                        help="override the loss scaling: Poisson term summed or averaged over neurons "
                             f"(default {PAPER_SCALING[1]})")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    parser.add_argument("--grid", type=_grid_count, nargs="?", const="auto", default=None, metavar="G",
                        help=f"train the runs of one model and layer (seeds, alpha:beta, regions of equal size) as "
                             f"grids of up to G models in one process (default G: {sizes}): one vmapped stacked "
                             f"model on CUDA, the runs' own steps in turn on CPU (as fast as separate runs, the "
                             f"same numbers); on CUDA, models whose forward draws random numbers (VAE, VQ-VAE, "
                             f"dropout) still train alone")
    parser.add_argument("--executor", choices=EXECUTORS, default=EXECUTORS[0],
                        help=f"where the runs train: local processes (default) or Ray tasks on a Ray cluster "
                             f"(needs {RAY_INSTALL})")
    parser.add_argument("--address", default=None,
                        help="--executor ray: the cluster's address (HOST:PORT printed by 'ray start --head', or "
                             "auto); default: RAY_ADDRESS, else the cluster started on this machine with "
                             "'ray start', else a new Ray instance on this machine alone")
    parser.add_argument("--gpus-per-task", type=float, default=0.0, metavar="FRACTION",
                        help="--executor ray: the fraction of a GPU each run reserves, in (0, 1] (0.25: four runs "
                             "share a GPU); default 0: the runs train on CPU")
    parser.add_argument("--only", default=None, metavar="LABELS",
                        help="train only the configurations whose label matches one of these comma-separated "
                             "shell patterns (e.g. 'CAE*' or 'CAE-FR2,CNN-FR2'; plus the all-neuron runs they "
                             "need); the report covers the whole target and says how many runs are missing")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write TARGET/report.md from the runs already finished in --out (an "
                             "unfinished sweep's report says how many runs are missing)")


def run(args) -> int:
    from daenr_fast.experiments.executors import make_executor
    from daenr_fast.experiments.report import write_report
    from daenr_fast.experiments.sweep import run_sweep
    from daenr_fast.experiments.tables import arms_for

    if args.seeds < 1 or args.jobs < 1:
        raise ValueError("--seeds and --jobs must be at least 1")
    if args.report_only:
        return _report_only(args)
    if args.grid not in (None, "auto") and args.grid < 1:
        raise ValueError(f"--grid must be at least 1 (runs per grid), got {args.grid}")
    protocol = _protocol(args)
    regions = tuple(sorted(set(args.regions)))
    seeds = list(range(args.seeds))
    arms = select_arms(arms_for(args.target, regions), args.only)
    executor = make_executor(args.executor, jobs=args.jobs, address=args.address, threads=args.threads,
                             gpus_per_task=args.gpus_per_task)
    try:
        threads = args.threads or executor.default_threads()
        print(f"{args.target}: {len(arms)} configurations x {len(seeds)} seeds, protocol {protocol.name}, "
              f"data {args.data}, {executor.describe(threads)}", flush=True)
        summary = run_sweep(arms, seeds, protocol, args.data, args.out, jobs=args.jobs, threads=threads,
                            device=args.device, log=lambda line: print(line, flush=True), executor=executor,
                            grid=_grid_size(args.grid, executor.job_device(args.device)))
    finally:
        executor.close()
    path = write_report(args.out, args.target, regions, seeds, protocol, args.data, summary, args.jobs, threads)
    _print_claims(args, regions, seeds, protocol)
    print(f"wall time {summary.wall_seconds:.0f} s ({summary.trained} trained, {summary.reused} reused, "
          f"{summary.failed} failed); report: {path}")
    return 1 if summary.failed else 0


def select_arms(arms, only):
    """The arms whose label matches one of the comma-separated shell patterns ``only`` (None: all), with the
    parent arms their neuron subsets come from."""
    from fnmatch import fnmatchcase

    if only is None:
        return arms
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    chosen = {a for a in arms if any(fnmatchcase(a.label, p) for p in patterns)}
    if not chosen:
        labels = ", ".join(dict.fromkeys(a.label for a in arms))
        raise ValueError(f"--only {only!r} matches no configuration of this target; its labels are: {labels}")
    chosen |= {a.parent for a in chosen if a.parent is not None}
    return [a for a in arms if a in chosen]


def _protocol(args):
    from daenr_fast.experiments.protocol import PAPER, QUICK

    return (QUICK if args.quick else PAPER).with_overrides(
        max_steps=args.max_steps, patience=args.patience, recon_reduction=args.recon_reduction,
        response_reduction=args.response_reduction)


def _print_claims(args, regions, seeds, protocol) -> None:
    """One line per table: the verdicts of its claims over the runs in ``--out``."""
    from daenr_fast.experiments.claims import claim_results, summary_line
    from daenr_fast.experiments.sweep import read_results, rows_for
    from daenr_fast.experiments.tables import layouts_for

    rows = read_results(args.out)
    for layout in layouts_for(args.target, regions):
        results = claim_results(layout, lambda arm: rows_for(rows, arm, seeds, protocol, args.data))
        if results:
            print(f"{layout.name} claims: {summary_line(results)}")


def _report_only(args) -> int:
    """``--report-only``: the report of the runs already in ``--out``; nothing is trained."""
    from daenr_fast.experiments.report import write_report

    given = {"--grid": args.grid is not None, "--executor ray": args.executor != "local",
             "--address": args.address is not None, "--gpus-per-task": bool(args.gpus_per_task),
             "--only": args.only is not None}
    training = [flag for flag, is_given in given.items() if is_given]
    if training:
        raise ValueError(f"--report-only trains nothing, so {', '.join(training)} cannot apply; leave "
                         f"{'it' if len(training) == 1 else 'them'} out")
    out = Path(args.out)
    if not (out / "results.csv").is_file():
        raise ValueError(f"--report-only needs a sweep folder with a results.csv; {out} has none")
    protocol, regions, seeds = _protocol(args), tuple(sorted(set(args.regions))), list(range(args.seeds))
    path = write_report(out, args.target, regions, seeds, protocol, args.data, None, jobs=None, threads=None)
    _print_claims(args, regions, seeds, protocol)
    print(f"report: {path}")
    return 0


def _grid_count(text: str):
    """``--grid`` value: ``auto`` (the device's default) or a number of runs."""
    return text if text == "auto" else int(text)


def _grid_size(grid, device: str):
    """Runs per grid: None (no grids), the device's default for a bare ``--grid``, else the given number."""
    from daenr_fast.experiments.grid_worker import default_grid_size

    return default_grid_size(device) if grid == "auto" else grid
