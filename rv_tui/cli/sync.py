"""``rv sync push|pull|watch``: move the project's code to and from its remote workspace."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from rv_tui.cli.common import add_json_flag, cluster_from_args, err, print_json
from rv_tui.errors import RvError
from rv_tui.paths import RemotePaths
from rv_tui.workspace import sync
from rv_tui.workspace.ignore import IgnoreMatcher
from rv_tui.workspace.project import detect_project, find_root

WATCH_DEBOUNCE_MS = 500
WATCH_ARM_MS = 300  # awatch's first timeout yield: proof the watcher is armed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="push/pull/watch the project's remote workspace")
    s = p.add_subparsers(dest="sync_command", metavar="ACTION", required=True)

    push = s.add_parser("push", help="upload changed files (git-tracked + untracked, .rvignore honoured)")
    push.add_argument("path", nargs="?", default=".", help="project directory (default: .)")
    push.add_argument("--dry-run", "-n", action="store_true", help="show what would change, change nothing")
    push.add_argument("--list", action="store_true", help="list every file to upload/delete")
    add_json_flag(push)
    push.set_defaults(func=_push)

    pull = s.add_parser("pull", help="download a remote file or directory")
    pull.add_argument("remote", help="path relative to the workspace code/ dir, or absolute")
    pull.add_argument("local", nargs="?", default=".", help="local destination directory (default: .)")
    add_json_flag(pull)
    pull.set_defaults(func=_pull)

    watch = s.add_parser("watch", help="push on every change (debounced)")
    watch.add_argument("path", nargs="?", default=".")
    watch.set_defaults(func=_watch)


def _project(path: str):
    root = find_root(Path(path))
    if root is None:
        raise RvError(f"{Path(path).resolve()} is not inside a project",
                      hint="run from a git repository or a directory with pyproject.toml/requirements.txt")
    return detect_project(root, root=root)


def _progress_printer() -> sync.Progress:
    state = {"last": 0.0}

    def show(sent: int, total: int) -> None:
        if total < 1 << 20 or not sys.stderr.isatty():
            return
        now = time.monotonic()
        if now - state["last"] < 0.1 and sent < total:
            return
        state["last"] = now
        pct = 100 * sent // max(total, 1)
        bar = "#" * (pct // 4)
        end = "\n" if sent >= total else ""
        print(f"\r  [{bar:<25}] {pct:3d}% {sent / 2**20:.1f}/{total / 2**20:.1f} MiB", end=end,
              file=sys.stderr, flush=True)
    return show


def _print_plan(result: sync.SyncResult, verbose: bool) -> None:
    plan = result.plan
    if verbose or result.dry_run:
        for f in plan.upload:
            print(f"  + {f.rel}")
        for rel in plan.delete:
            print(f"  - {rel}")
    for rel in plan.conflicts:  # always said: these files did not travel
        err(f"rv: not sent: {rel!r} (its remote place holds files rv did not sync; move them or rename)")
    verb = "would sync" if result.dry_run else "synced"
    print(f"{verb} {plan.root} -> {plan.code_dir}: {plan.summary()}"
          + ("" if result.dry_run else f" in {result.seconds:.1f}s"))


async def _push(args: argparse.Namespace) -> int:
    project = _project(args.path)
    async with cluster_from_args(args) as cluster:
        code = RemotePaths(cluster.scratch).code_dir(project.name, project.branch)
        result = await sync.push(cluster, project.root, code, dry_run=args.dry_run,
                                 progress=None if args.json else _progress_printer())
    if args.json:
        print_json({"project": project.name, "branch": project.branch, "dry_run": result.dry_run,
                    **result.plan.to_json(), "bytes_sent": result.bytes_sent,
                    "round_trips": result.round_trips})
    else:
        _print_plan(result, args.list)
    return 0


async def _pull(args: argparse.Namespace) -> int:
    project = _project(".") if not args.remote.startswith("/") else None
    async with cluster_from_args(args) as cluster:
        base = (RemotePaths(cluster.scratch).code_dir(project.name, project.branch)
                if project is not None else None)
        names = await sync.pull(cluster, args.remote, args.local, base=base)
    if args.json:
        print_json({"pulled": names, "dest": str(Path(args.local).resolve())})
    else:
        print(f"pulled {len(names)} file(s) into {Path(args.local).resolve()}")
    return 0


async def watch_and_push(cluster, root: Path, code: str, *, report, on_error=None) -> None:
    """Push once, then on every relevant change (debounced) until cancelled."""
    try:
        from watchfiles import awatch
    except ImportError as exc:  # pragma: no cover - watchfiles is a dependency in practice
        raise RvError("rv sync watch needs the watchfiles package", hint="pip install watchfiles") from exc
    matcher = IgnoreMatcher.with_defaults()

    def relevant(_change: object, path: str) -> bool:
        try:
            rel = Path(path).resolve().relative_to(root).as_posix()
        except ValueError:
            return False
        return not rel.startswith(".git/") and not matcher.ignored(rel)

    # Arm the watcher BEFORE the first push: an edit made while (or right after) it runs is then
    # a change event, not lost until some other file changes.  The first (timeout) yield of
    # awatch comes after its Rust watcher exists, which collects events from then on.
    events: asyncio.Queue[object] = asyncio.Queue()
    armed = asyncio.Event()

    async def pump() -> None:
        try:
            async for changes in awatch(root, watch_filter=relevant, debounce=WATCH_DEBOUNCE_MS,
                                        step=100, rust_timeout=WATCH_ARM_MS, yield_on_timeout=True):
                armed.set()
                if changes:
                    events.put_nowait(changes)
        except Exception as exc:  # surface a watcher failure to the loop below
            events.put_nowait(exc)
            armed.set()

    watcher = asyncio.create_task(pump())
    try:
        await armed.wait()
        first = await sync.push(cluster, root, code, progress=_progress_printer())
        report(first)
        while True:
            item = await events.get()
            while not events.empty():  # coalesce what piled up during the last push
                nxt = events.get_nowait()
                item = nxt if isinstance(nxt, Exception) else item
            if isinstance(item, Exception):
                raise RvError(f"watching {root} failed: {item}")
            try:
                result = await sync.push(cluster, root, code, progress=_progress_printer())
            except RvError as exc:
                (on_error or (lambda e: err(f"rv: sync failed: {e}")))(exc)
                continue
            report(result)
    finally:
        watcher.cancel()
        try:
            await watcher
        except (asyncio.CancelledError, Exception):
            pass


async def _watch(args: argparse.Namespace) -> int:
    project = _project(args.path)
    root = project.root
    first = [True]

    def report(result: sync.SyncResult) -> None:
        if first[0]:
            first[0] = False
            _print_plan(result, False)
            err(f"watching {root} (Ctrl-C to stop)")
        elif not result.plan.empty:
            _print_plan(result, True)

    async with cluster_from_args(args) as cluster:
        code = RemotePaths(cluster.scratch).code_dir(project.name, project.branch)
        try:
            await watch_and_push(cluster, root, code, report=report)
        except asyncio.CancelledError:
            pass
    return 0
