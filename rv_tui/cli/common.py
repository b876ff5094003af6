"""Helpers every CLI command shares: open the cluster, JSON output, masking, small formatting.

Why here: each command module stays about its own flags and output, and "which cluster am I
talking to" (configured vs demo, and saying so) is decided the same way everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from rv_tui.cluster import open_cluster
from rv_tui.cluster.base import Cluster
from rv_tui.config import Config, ConfigError, load_config


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def load(args: argparse.Namespace) -> Config | None:
    """The config (None when there is none; the demo cluster is used then).

    With ``--demo`` a broken config is only a warning: the demo needs nothing from it, and a
    newcomer trying the demo should not be stopped by a half-written file.
    """
    if not hasattr(args, "_config"):
        try:
            args._config = load_config()
        except ConfigError as exc:
            if not getattr(args, "demo", False):
                raise
            print(f"rv: warning: ignoring the config for --demo: {exc}", file=sys.stderr)
            args._config = None
        for warning in (args._config.warnings if args._config is not None else ()):
            print(f"rv: warning: {warning}", file=sys.stderr)
    return args._config


async def open_from_args(args: argparse.Namespace) -> Cluster:
    """The cluster for this invocation; prints a notice on stderr when it is the demo."""
    config = load(args)
    demo = bool(getattr(args, "demo", False))
    cluster = await open_cluster(config, demo=demo, seed=getattr(args, "seed", None),
                                 speed=getattr(args, "speed", None))
    if cluster.is_demo:
        why = "--demo" if demo else "no [connection] configured; run `rv init` to use your cluster"
        print(f"rv: using the simulated demo cluster ({why})", file=sys.stderr)
    return cluster


#: How long a command waits, at most, for the day's keepalive command to be sent before closing.
KEEPALIVE_GRACE_S = 2.0


def start_keepalive(cluster: Cluster, config: Config | None) -> "asyncio.Task[None] | None":
    """The once-a-day scratch keepalive (a detached remote ``touch``); never raises."""
    try:
        from rv_tui.workspace.keepalive import maybe_keepalive

        return maybe_keepalive(cluster, config)
    except Exception:  # noqa: BLE001 - a keepalive must never break a command
        return None


async def settle_keepalive(task: "asyncio.Task[None] | None", grace: float = KEEPALIVE_GRACE_S) -> None:
    """Give the keepalive's one short command up to ``grace`` seconds before the connection
    closes (it usually finished long ago); cancel it after that."""
    if task is None or task.done():
        return
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@asynccontextmanager
async def cluster_from_args(args: argparse.Namespace) -> AsyncIterator[Cluster]:
    """The cluster for one CLI command; starts the daily keepalive and closes everything after."""
    cluster = await open_from_args(args)
    keepalive = start_keepalive(cluster, load(args))
    try:
        yield cluster
    finally:
        try:
            await settle_keepalive(keepalive)
        except Exception:  # noqa: BLE001 - the keepalive never fails a command
            pass
        try:
            await cluster.close()
        except Exception:
            pass


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, datetimes, tuples and sets as plain JSON values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def print_json(obj: Any) -> None:
    print(json.dumps(to_jsonable(obj), indent=2, sort_keys=False, default=str))


def err(message: str) -> None:
    print(message, file=sys.stderr)


def ask_yes(prompt: str, default: bool = False) -> bool:
    """Interactive yes/no; on a non-tty stdin the default is the answer."""
    if not sys.stdin.isatty():
        return default
    try:
        ans = input(f"{prompt} [{'Y/n' if default else 'y/N'}] ").strip().lower()
    except EOFError:
        return default
    return default if not ans else ans in ("y", "yes")
