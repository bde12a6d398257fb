"""``daenr build``: compile the C++ (and, with a GPU and nvcc, CUDA) extensions ahead of time."""
from __future__ import annotations

NAME = "build"
HELP = "compile the C++/CUDA extensions now instead of at first use"


def add_arguments(parser) -> None:
    parser.add_argument("--ops", default="factorized_readout,poisson_loss,vq_lookup",
                        help="comma-separated ops to build (default: all)")
    parser.add_argument("--verbose", action="store_true", help="show the compiler output")


def run(args) -> int:
    from daenr_fast import _build

    failed = 0
    for op in [o.strip() for o in args.ops.split(",") if o.strip()]:
        try:
            has_cuda = _build.load_extension(op, verbose=args.verbose)
            print(f"{op}: built ({'CPU + CUDA' if has_cuda else 'CPU'})")
        except _build.ExtensionUnavailable as err:
            failed += 1
            print(f"{op}: FAILED: {err}")
    return 1 if failed else 0
