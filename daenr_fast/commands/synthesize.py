"""``daenr synthesize RUN --neurons 3,17``: images that drive chosen neurons, through the decoder and in pixels."""
from __future__ import annotations

NAME = "synthesize"
HELP = ("images that maximise (or set) chosen neurons' predicted rates, through the decoder and in pixel space, "
        "beside the best natural test image; true rates on simulated data")


def add_arguments(parser) -> None:
    from daenr_fast.synthesis.synthesize import DEFAULT_RESTARTS, DEFAULT_SEED, DEFAULT_STEPS

    parser.add_argument("run_dir", metavar="RUN",
                        help="a folder written by daenr train (a joint model or a CNN baseline)")
    parser.add_argument("--neurons", required=True,
                        help="comma-separated neuron indices (0-based, the data's order), or 'all'")
    parser.add_argument("--method", default=None,
                        help="decoder, pixel or decoder,pixel (default: every method the run supports; a CNN "
                             "baseline has no decoder)")
    parser.add_argument("--objective", default="max", help="max (default) or target:RATE (e.g. target:2.5)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"optimisation steps per restart (default {DEFAULT_STEPS})")
    parser.add_argument("--restarts", type=int, default=DEFAULT_RESTARTS,
                        help=f"random restarts per neuron (default {DEFAULT_RESTARTS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the starting images "
                        f"(default {DEFAULT_SEED})")
    parser.add_argument("--out", default=None, help="output folder (default RUN/synthesis)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from pathlib import Path

    from daenr_fast.synthesis import open_run, parse_neurons, synthesize, write_report
    from daenr_fast.synthesis.report import check_out
    from daenr_fast.synthesis.synthesize import check_methods
    from daenr_fast.train.trainer import resolve_device

    out = check_out(args.out if args.out is not None else Path(args.run_dir) / "synthesis")
    run_ = open_run(args.run_dir, str(resolve_device(args.device)))
    neurons = parse_neurons(args.neurons, run_.n_neurons)
    result = synthesize(run_, neurons, check_methods(run_, args.method), args.objective, args.steps,
                        args.restarts, args.seed, progress=not args.no_progress)
    report = write_report(result, out)
    print(f"{report['model']} ({report['data']}), {len(neurons)} neuron(s), objective {report['objective']}")
    rows = [("image", "predicted", "true", "RMS contrast", "spectrum slope")]
    for name in ["natural", *report["methods"]]:
        s = report["summary"][name]
        rows.append((name, _fmt(s["predicted_rate_mean"]), _fmt(s.get("true_rate_mean")),
                     _fmt(s["rms_contrast_mean"]), _fmt(s["spectrum_slope_mean"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    for key, value in report["summary"]["comparisons"].items():
        print(f"{key.replace('_', ' ')}: {value:.0%} of neurons")
    print(f"wrote {out}/synthesis.npz, synthesis.json, synthesis.png")
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
