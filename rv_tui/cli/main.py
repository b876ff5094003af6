"""The ``rv`` command: wires the command modules together and nothing else.

Each module in :mod:`rv_tui.cli` exposes ``register(subparsers)``; it adds its sub-commands and
sets ``func`` (an ``async def (args) -> int``) on them.  ``rv`` with no command opens the TUI.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import traceback

from rv_tui import __version__
from rv_tui.errors import RvError

#: Command modules, in help order.  A module that is not written yet is skipped.
COMMAND_MODULES = (
    "up", "run", "ps", "logs", "cost", "status", "env", "sync", "exec", "init", "tui",
    "ssh", "gpu", "forward", "agent",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) just one command module's: ``rv ps`` need not import the
    modules of every other command (half of a warm command's start-up)."""
    parser = argparse.ArgumentParser(
        prog="rv",
        description="GPU computing on a Slurm cluster over SSH: smart allocator, jobs, logs, TUI.",
    )
    parser.add_argument("--version", action="version", version=f"rv-tui {__version__}")
    parser.add_argument("--demo", action="store_true",
                        help="use the built-in simulated cluster instead of the configured one")
    parser.add_argument("--seed", type=int, default=None, help="demo cluster random seed")
    parser.add_argument("--speed", type=float, default=None,
                        help="demo cluster time speed-up (e.g. 60)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(f"rv_tui.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rv_tui.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The sub-command named on the command line (skipping the global options), if any."""
    it = iter(argv)
    for word in it:
        if word in ("--seed", "--speed"):
            next(it, None)
        elif not word.startswith("-"):
            return word
        elif word in ("-h", "--help", "--version"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    word = _command_word(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(word if word in COMMAND_MODULES else None)
    args = parser.parse_args(argv)
    if args.command is None:
        from rv_tui.cli.tui import run_tui

        return run_tui(args)
    try:
        return asyncio.run(args.func(args))
    except KeyboardInterrupt:
        print("rv: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place a user sees a failure: no tracebacks
        return report_error(exc)


def _first_rv_error(exc: BaseException) -> RvError | None:
    """The RvError itself, or the first one inside an ExceptionGroup (TaskGroup failures)."""
    if isinstance(exc, RvError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_rv_error(inner)
            if found is not None:
                return found
    return None


def report_error(exc: Exception) -> int:
    """Print a failure for a user: ``rv: error:`` + hint (exit 2) for an RvError; anything else
    is a bug in rv, shown in one line (exit 1) with its traceback only under ``RV_DEBUG=1``."""
    rv_exc = _first_rv_error(exc)
    if rv_exc is not None:
        print(f"rv: error: {rv_exc.message}", file=sys.stderr)
        if rv_exc.hint:
            print(f"hint: {rv_exc.hint}", file=sys.stderr)
        return 2
    if os.environ.get("RV_DEBUG") == "1":
        traceback.print_exception(exc, file=sys.stderr)
    print(f"rv: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    print("hint: this is a bug in rv; re-run with RV_DEBUG=1 for the traceback and report it",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
