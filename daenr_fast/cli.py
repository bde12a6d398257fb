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
import os
import pkgutil
import sys
import traceback
import warnings

from daenr_fast import commands

DEBUG_VARIABLE = "DAENR_DEBUG"
EXIT_USER_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED = 2, 1, 130
#: errors caused by what the user asked for (bad options, data, checkpoints, files): one line, no traceback
USER_ERRORS = (ValueError, OSError)
DEBUG_HELP = f"show the Python traceback of an error (or set {DEBUG_VARIABLE}=1)"


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
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        text = module.HELP.replace("%", "%%")  # argparse formats help strings with %
        cmd = sub.add_parser(module.NAME, help=text, description=module.HELP)
        module.add_arguments(cmd)
        # also accepted after the command; SUPPRESS keeps a top-level --debug when it is not repeated here
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        cmd.set_defaults(_run=module.run)
    return parser


def _debug_requested(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def describe_error(err: BaseException) -> str:
    """One line for a user error: an ``OSError`` as ``FILE: what happened``, anything else as its message."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run ``daenr ARGV``; returns the exit status.

    Errors print one line ``daenr COMMAND: error: MESSAGE`` on stderr, the form argparse uses for bad options:
    user errors (bad values, data, checkpoints, files; :data:`USER_ERRORS`) exit 2, anything else is a bug,
    reported as ``daenr COMMAND: error: internal error (TYPE: MESSAGE); ...`` with exit status 1. ``--debug``
    or ``DAENR_DEBUG=1`` shows the traceback as well. Warnings print as ``daenr COMMAND: warning: MESSAGE``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USER_ERROR
    prog = f"daenr {args.command}"
    debug = _debug_requested(args)
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = lambda message, *_, **__: print(f"{prog}: warning: {message}", file=sys.stderr)
        try:
            return int(args._run(args) or 0)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except USER_ERRORS as err:
            if debug:
                traceback.print_exc()
            print(f"{prog}: error: {describe_error(err)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except Exception as err:  # noqa: BLE001  (a bug, not the user's doing: say so, keep the details a flag away)
            if debug:
                traceback.print_exc()
            hint = "" if debug else f"; run again with --debug (or {DEBUG_VARIABLE}=1) for the traceback"
            print(f"{prog}: error: internal error ({type(err).__name__}: {err}){hint}, and please report it",
                  file=sys.stderr)
            return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
