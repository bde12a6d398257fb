"""``daenr demo``: CAE vs CAE-FR2 on simulated region 3 (demo settings), a table and a reconstruction figure."""
from __future__ import annotations

NAME = "demo"
HELP = ("train CAE and CAE-FR2 on simulated region 3 and compare their reconstructions and the Poisson term's "
        "share of the encoder gradient (about 3 minutes on 2 CPU cores)")


def add_arguments(parser) -> None:
    from daenr_fast.experiments.demo import DEMO

    parser.add_argument("--out", default="daenr-demo", help="output folder (default ./daenr-demo); finished runs "
                        "found there are reused")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="models trained in parallel processes (default 2)")
    parser.add_argument("--data", default="sim", help="data (default: the built-in simulated region 3)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help=f"override the demo's step cap ({DEMO.max_steps})")


def run(args) -> int:
    from daenr_fast.experiments.demo import DEMO, demo_arms, run_demo

    joint = demo_arms()[1]
    protocol = DEMO.with_overrides(max_steps=args.max_steps)
    result = run_demo(args.out, data=args.data, protocol=protocol, seed=args.seed, jobs=args.jobs,
                      log=lambda line: print(line, flush=True))
    print()
    print(f"{args.data} region 3, {protocol.max_steps} steps of batch {protocol.batch_size}, seed {args.seed}; "
          f"loss: squared error {protocol.recon_reduction} over pixels + beta * Poisson {protocol.response_reduction} "
          f"over neurons ({joint.label}: alpha {joint.alpha:g}, beta {joint.beta:g}, {joint.preset}):")
    print(result["table"])
    if result["difference"]:
        print(result["difference"])
    s = result["summary"]
    print(f"\nwall time {s.wall_seconds:.0f} s ({s.trained} trained, {s.reused} reused, {s.failed} failed)")
    if result["figure"] is not None:
        print(f"figure: {result['figure']}")
    print("One seed and a capped run: a first look, not a test of the paper's claims (see daenr reproduce).")
    return 0 if len(result["rows"]) == 2 else 1
