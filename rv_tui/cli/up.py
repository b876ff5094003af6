"""``rv up``: win an interactive GPU allocation, open a shell in it, release it when the shell exits.

The race is the same as ``rv run``'s (every strategy at once, first start wins, losers cancelled);
the winning job just holds its allocation.  The shell is ``srun --jobid=<id> --overlap --pty`` with
rv's environment and venv (the job templates' ``attach_command``), started through the system
``ssh -t`` with the same host, port, user, identity and known_hosts as rv's own connection
(asyncssh could do it too, but passing a local terminal through is what OpenSSH is for).
Unlike the original, the allocation is cancelled when the shell exits (``--keep`` to hold it).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from rv_tui.allocator.race import Race, RaceEventKind, RaceResult
from rv_tui.cli.common import cluster_from_args, err, load, print_json
from rv_tui.cli.run import add_request_options, build_request, event_printer, print_plan, race_summary
from rv_tui.cli.ssh import run_ssh_tty, ssh_argv  # noqa: F401 - ssh_argv re-exported (tui)
from rv_tui.cluster.base import Cluster
from rv_tui.config import Config
from rv_tui.durations import parse_duration
from rv_tui.errors import RvError
from rv_tui.jobs.launch import job_context, prepare_launch
from rv_tui.jobs.store import GroupStore, git_info
from rv_tui.quoting import join

#: Attach to a won allocation and return the shell's exit status.
Attach = Callable[[Cluster, Config | None, str, RaceResult], Awaitable[int]]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="win an interactive GPU allocation and open a shell in it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_request_options(p, default_name="rv-interactive")
    p.add_argument("--no-attach", action="store_true",
                   help="only win the allocation and print it (release it later with rv stop)")
    p.add_argument("--keep", action="store_true", help="keep the allocation after the shell exits")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    return await up(args)


async def up(args: argparse.Namespace, *, attach: Attach | None = None, store: GroupStore | None = None) -> int:
    """The whole ``rv up`` flow; ``attach`` is replaceable so the release logic is testable without a tty."""
    config = load(args)
    request = build_request(args, config, None)
    async with cluster_from_args(args) as cluster:
        launch = await prepare_launch(cluster, config, request, None, name=args.name,
                                      dry_run=args.dry_run, max_strategies=args.max_strategies)
        if args.dry_run:
            print_plan(launch.plan, args.json)
            return 0
        return await up_race(cluster, config, launch.entries, args, launch.group_id, attach=attach, store=store)


async def up_race(cluster: Cluster, config: Config | None, entries: list, args: argparse.Namespace, group_id: str,
                  *, attach: Attach | None = None, store: GroupStore | None = None) -> int:
    timeout = parse_duration(args.wait_timeout) if getattr(args, "wait_timeout", None) else None
    race = Race(cluster, entries, group_id=group_id, kind="up", name=args.name or "rv-interactive", command=None,
                git=git_info(), store=store or GroupStore(), timeout=timeout, leave=bool(args.leave))
    show = event_printer(args.json)
    async with race:
        async for ev in race:
            show(ev)
            if ev.kind in (RaceEventKind.NO_WINNER, RaceEventKind.TIMEOUT):
                break
    result = race.result
    if result.winner_id is None:
        if args.json:
            print_json(race_summary(result))
        raise RvError(f"no allocation started ({result.outcome})",
                      hint="jobs were left queued" if args.leave else "submitted jobs were cancelled")
    job_id = result.winner_id
    nodes = ",".join(result.winner_info.nodes) if result.winner_info and result.winner_info.nodes else "?"
    if args.no_attach:
        if args.json:
            print_json(race_summary(result))
        else:
            print(f"allocation {job_id} on {nodes} (group {group_id}); release it with `rv stop {job_id}`")
        return 0
    if not args.json:
        err(f"rv: allocation {job_id} on {nodes}; opening a shell (exit it to release the GPUs)")
    code = 0
    try:
        code = await (attach or attach_shell)(cluster, config, job_id, result)
    finally:
        if not args.keep:
            await asyncio.shield(cluster.cancel([job_id]))
            if not args.json:
                err(f"rv: released allocation {job_id}")
    if args.json:
        print_json({**race_summary(result), "released": not args.keep, "shell_exit": code})
    return code


def attach_remote_command(cluster: Cluster, config: Config | None, job_id: str, result: RaceResult) -> str:
    """The remote shell command that opens an interactive shell inside the allocation."""
    from rv_tui.allocator.model import Request
    from rv_tui.jobs.templates import attach_command

    ctx = job_context(cluster, config, Request(command=None, name=args_name(result)), result.group_id)
    return join(attach_command(job_id, ctx))


def args_name(result: RaceResult) -> str:
    return result.record.name if result.record else "rv-interactive"


async def attach_shell(cluster: Cluster, config: Config | None, job_id: str, result: RaceResult) -> int:
    """Run the interactive shell through the system ssh with the terminal passed through."""
    if cluster.is_demo:
        err("rv: the demo cluster has no real nodes to open a shell on; releasing the allocation")
        return 0
    return await run_ssh_tty(config, attach_remote_command(cluster, config, job_id, result), what="rv up",
                             fallback_hint="use `rv up --no-attach` to only win the allocation")
