"""The ``rv`` command: wires the command modules together and nothing else.

Each module in :mod:`rv_tui.cli` exposes ``register(subparsers)``; it adds its sub-commands and
sets ``func`` (an ``async def (args) -> int``) on them.  ``rv`` with no command opens the TUI.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

from rv_tui import __version__
from rv_tui.errors import RvError

#: Command modules, in help order.  A module that is not written yet is skipped.
COMMAND_MODULES = (
    "up", "run", "ps", "logs", "cost", "status", "env", "sync", "exec", "init", "tui",
)


def build_parser() -> argparse.ArgumentParser:
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
        try:
            module = importlib.import_module(f"rv_tui.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rv_tui.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from rv_tui.cli.tui import run_tui

        return run_tui(args)
    try:
        return asyncio.run(args.func(args))
    except RvError as exc:
        print(f"rv: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
