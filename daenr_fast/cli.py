"""The ``daenr`` command.

Each sub-command lives in its own module under :mod:`daenr_fast.commands` and exposes

* ``NAME``  - the sub-command name (``daenr NAME ...``),
* ``HELP``  - a one-line description,
* ``add_arguments(parser)`` - adds its options to an ``argparse`` parser,
* ``run(args) -> int`` - does the work and returns the exit status.

Modules are discovered at start-up, so adding a command never touches this file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from daenr_fast import commands


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        yield importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daenr",
        description="DAE-NR: autoencoders that also predict V1 responses, with fused kernels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        text = module.HELP.replace("%", "%%")  # argparse formats help strings with %
        cmd = sub.add_parser(module.NAME, help=text, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"daenr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"daenr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
