"""``daenr data-stats``: the response and test-image statistics of any dataset (simulated, Antolik folder, .npz)."""
from __future__ import annotations

NAME = "data-stats"
HELP = ("print response statistics (mean, zeros, sparseness, oracle correlation) and test-image statistics "
        "(RMS contrast, spectrum slope, intensity mean and spread) of datasets")


def add_arguments(parser) -> None:
    parser.add_argument(
        "datasets", nargs="+", metavar="PATH_OR_NAME",
        help="sim:region{1,2,3}[:seed=N], antolik:PATH/regionK, an Antolik region folder, or PATH.npz",
    )
    parser.add_argument("--no-targets", action="store_true",
                        help="do not print the calibration targets under simulated regions")


def _resolve(name: str) -> str:
    import os

    if os.path.isdir(name):
        return "antolik:" + name
    return name


def run(args) -> int:
    import warnings

    from daenr_fast.data import REGIONS, format_stats, load, stats

    rows, targets, notes = [], [], []
    for name in args.datasets:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*\[train_images\]: missing file: loaded the test split only")
            dataset = load(_resolve(name))
        rows.append(stats(dataset))
        if dataset.test_only:
            notes.append(f"{dataset.name}: no training images ({', '.join(dataset.meta.get('missing', []))} "
                         "missing): test split only; the training columns are of the training responses alone")
        region = dataset.meta.get("region") if dataset.meta.get("source") == "simulated" else None
        targets.append(None if args.no_targets or region not in REGIONS
                       else {**REGIONS[region].targets, **REGIONS[region].image_targets})
    print(format_stats(rows, targets))
    for note in notes:
        print(note)
    return 0
