"""``rv tui`` (and ``rv`` with no command): open the dashboard on the configured cluster or the demo.

The cluster is opened inside the same event loop the app runs in (``App.run_async``), so the SSH
connection the pool holds lives as long as the app and is closed when it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from rv_tui.errors import RvError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="open the full-screen dashboard (same as `rv` with no command)")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                   help="cluster poll interval (default 5 s; the next poll starts after the last ends)")
    p.set_defaults(func=tui_main)


async def tui_main(args: argparse.Namespace) -> int:
    """Open the cluster, run the app, close the cluster (RvError propagates to main's printer)."""
    from rv_tui.cluster import open_cluster
    from rv_tui.config import config_path, load_config
    from rv_tui.tui.app import RvApp

    demo = bool(getattr(args, "demo", False))
    config = None if demo else load_config()
    cluster = await open_cluster(config, demo=demo, seed=getattr(args, "seed", None),
                                 speed=getattr(args, "speed", None))
    try:
        app = RvApp(cluster, config_path=config_path(),
                    poll_interval=getattr(args, "interval", 5.0) or 5.0)
        result = await app.run_async()
    finally:
        try:
            await cluster.close()
        except Exception:  # noqa: BLE001 - closing a dropped connection is not the user's problem
            pass
    return int(result or 0)


def run_tui(args: argparse.Namespace) -> int:
    """``rv`` with no command: run the dashboard; user-facing errors are printed, not raised."""
    try:
        return asyncio.run(tui_main(args))
    except RvError as exc:
        print(f"rv: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
