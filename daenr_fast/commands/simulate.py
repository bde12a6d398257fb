"""``daenr simulate``: write a simulated region in the generic .npz format (with ground truth)."""
from __future__ import annotations

NAME = "simulate"
HELP = "simulate one V1 region (Table 7 sizes) and write it as a generic .npz with ground truth"


def add_arguments(parser) -> None:
    parser.add_argument("--region", type=int, default=3, choices=(1, 2, 3), help="region 1, 2 or 3 (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, help="output .npz path")


def run(args) -> int:
    from daenr_fast.data import save_npz, simulate, stats

    if not args.out.endswith(".npz"):
        raise ValueError(f"--out must end in .npz, got {args.out!r}")
    dataset = simulate(region=args.region, seed=args.seed)
    path = save_npz(dataset, args.out)
    s = stats(dataset)
    print(f"wrote {path}: {dataset!r}")
    print(f"mean/trial {s['mean_response']:.3f}, zeros {s['frac_zeros']:.3f}, "
          f"sparseness {s['lifetime_sparseness']:.3f}, oracle r {s['oracle_correlation']:.3f}")
    return 0
