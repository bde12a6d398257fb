"""Thin runner: ``python benchmarks/run.py ARGS`` is ``daenr bench ARGS`` (see ``daenr bench --help``)."""
import sys

from daenr_fast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
