"""``rv run [OPTIONS] [--] CMD...``: race every strategy for a batch command.

Without ``-f`` it submits, records the group and returns at once (the on-cluster claim makes
sure exactly one strategy runs the command and the winner cancels its siblings, even with the
laptop closed).  With ``-f`` it watches the race, follows the winner's logs and exits with the
job's real exit code (a killed, cancelled or timed-out job is non-zero), printing lines the way
``rv logs`` does (``[nodeN]``/``[stderr]`` prefixes, progress bars collapsed).  A followed job
that fails with a GPU hardware error (``CUDA error: unknown error``, ``GPU has fallen off the
bus``, ...) within its first minutes is raced again without the failed node(s), at most twice
(``--no-retry`` turns this off; see :mod:`rv_tui.jobs.retry`).

Before submitting, the shared launch assembly (:func:`rv_tui.jobs.launch.prepare_launch`, which
the TUI calls too) syncs the project, installs dependencies and snapshots ``code/``; every sibling
runs in that snapshot.  ``--dry-run`` prints the strategies and what the sync would send, and
uploads and submits nothing; ``--no-sync`` runs the command as given in the remote home.

The command runs exactly as typed: one argument is a shell string, run byte for byte under
``bash -c`` (``rv run "python a.py && python b.py > out.txt"``); several arguments are an argv,
run exactly as given (``rv run python train.py --lr 3e-4``).  From a sub-directory of the project
the job starts in the same sub-directory of its snapshot.  Dependencies and the venv: commands
starting with ``python``/``python3``, and commands that run a project script (``bash job.sh``,
``./job.sh``, ``torchrun ... train.py``); other shell strings are opaque (the dry run says which).

rv options come before the command; ``--`` also ends them.  rv flags found after the command are
passed to the command, with a warning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from rv_tui.allocator.model import Request
from rv_tui.allocator.race import Race, RaceEntry, RaceEvent, RaceEventKind, RaceResult
from rv_tui.cli.common import add_json_flag, cluster_from_args, err, load, print_json, to_jsonable
from rv_tui.cli.sync import _print_plan as _print_sync_plan
from rv_tui.cli.sync import _progress_printer
from rv_tui.cluster.base import TERMINAL_STATES, Cluster, JobInfo
from rv_tui.config import Config
from rv_tui.durations import parse_duration
from rv_tui.errors import RvError
from rv_tui.jobs import launch as _launch
from rv_tui.jobs.store import GroupStore, git_info
from rv_tui.logs import JobEnded, JobStatus, LogLine, follow
from rv_tui.logs import exit_code_of as _exit_code_of
from rv_tui.logs.follow import RESUBMITTED, UNREACHABLE

#: rv flags that, seen after the command, were probably meant for rv.
RV_FLAGS = ("-g", "--gpu", "-t", "--type", "--time", "--name", "--mem", "--mig", "-f", "--follow",
            "--single-node", "--json", "--dry-run", "--detach", "--leave", "--account")


# ----------------------------------------------------------------------------- options

def add_request_options(p: argparse.ArgumentParser, *, default_name: str | None = None) -> None:
    """The request flags ``rv up`` and ``rv run`` share."""
    p.add_argument("-g", "--gpu", type=int, default=None, metavar="N", help="GPUs (default 1)")
    p.add_argument("-t", "--type", default=None, metavar="TYPE",
                   help="GPU type (a6000, a40, a100, a100_40, v100, h200, rtx3090, mig; default: any)")
    p.add_argument("--time", default=None, metavar="DURATION", help="walltime: 2h, 30m, 2:59:00 (default from config)")
    p.add_argument("--name", default=default_name, help="job name")
    p.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    p.add_argument("--mig", action="store_true", help="a free MIG slice (= -g 1 -t mig)")
    p.add_argument("--single-node", action="store_true", help="no multi-node strategies")
    p.add_argument("--account", default=None, help="Slurm account (default from config)")
    p.add_argument("--max-strategies", type=int, default=16, metavar="N", help="race at most N strategies")
    p.add_argument("--dry-run", action="store_true", help="print the plan, submit nothing")
    p.add_argument("--leave", "--detach", dest="leave", action="store_true",
                   help="on Ctrl-C, timeout or error leave submitted jobs queued instead of cancelling them")
    p.add_argument("--wait-timeout", default=None, metavar="DURATION",
                   help="give up (and cancel) if no strategy starts within this time")
    add_json_flag(p)


def build_request(args: argparse.Namespace, config: Config | None, command: str | None) -> Request:
    """The Request for these flags (helper-3's ``request_from_args`` when present)."""
    args.command_str = command
    # flags used only later (by the race) are checked now, before anything is synced or submitted
    if getattr(args, "wait_timeout", None):
        try:
            parse_duration(args.wait_timeout)
        except RvError as exc:
            raise RvError(f"--wait-timeout: {exc.message}", hint=exc.hint) from None
    if getattr(args, "max_strategies", 1) < 1:
        raise RvError(f"--max-strategies must be at least 1 (got {args.max_strategies})")
    try:
        from rv_tui.allocator.plan import request_from_args  # type: ignore[attr-defined]
    except ImportError:
        request_from_args = None
    if request_from_args is not None:
        req = request_from_args(args, config)
        return req.with_(command=command) if req.command != command else req
    return _fallback_request(args, config, command)


def _fallback_request(args: argparse.Namespace, config: Config | None, command: str | None) -> Request:
    from rv_tui.gpus import resolve_gpu_type

    d = config.defaults if config else None
    gtype = args.type or (d.gpu_type if d else None)
    gpus = args.gpu or 1
    if args.mig:
        gtype, gpus = "mig", 1
    if gtype in (None, "", "any"):
        gtype = None
    else:
        gtype = resolve_gpu_type(gtype)
    if gpus < 1:
        raise RvError(f"--gpu must be at least 1 (got {gpus})")
    return Request(gpus=gpus, gpu_type=gtype, time_s=parse_duration(args.time or (d.time if d else "2:59:00")),
                   mem=args.mem, single_node=args.single_node, command=command, name=args.name,
                   account=args.account or (d.account if d else None))


async def make_plan_for(cluster: Cluster, request: Request, max_strategies: int) -> Any:
    try:
        from rv_tui.allocator.plan import make_plan
    except ImportError as exc:
        raise RvError("the allocator is not available in this build", hint=str(exc)) from exc
    return await make_plan(cluster, request, max_strategies=max_strategies)


def print_plan(plan: Any, as_json: bool) -> None:
    if as_json:
        print_json(plan.to_json() if hasattr(plan, "to_json") else plan)
        return
    from rv_tui.cli.plan_view import render_plan

    print(render_plan(plan))


# Kept importable from here for older callers (the TUI's previews); the logic lives in the core.
job_context = _launch.job_context
build_entries = _launch.build_entries


def event_printer(as_json: bool, quiet: bool = False) -> Callable[[RaceEvent], None]:
    """Print race events on stderr as they come (stdout stays for the result / JSON)."""
    def show(ev: RaceEvent) -> None:
        if as_json or quiet:
            return
        if ev.kind is RaceEventKind.NOTE:
            err(f"rv: note: {ev.message}")
        elif ev.kind is not RaceEventKind.STARTED:
            err(f"  {ev.describe()}")
    return show


def race_summary(result: RaceResult) -> dict[str, Any]:
    rec = result.record
    return {
        "group_id": result.group_id,
        "outcome": result.outcome,
        "winner": result.winner_id,
        "winner_nodes": list(result.winner_info.nodes) if result.winner_info else [],
        "cancelled": result.cancelled,
        "jobs": to_jsonable(rec.jobs) if rec else [],
        "errors": result.errors,
    }


# ----------------------------------------------------------------------------- command split

def split_command(words: list[str]) -> tuple[str, list[str]]:
    """The command from trailing words (one word: a shell string, run byte for byte; several: an
    argv, run exactly as given; see :mod:`rv_tui.jobs.command`), and rv-looking flags in it."""
    from rv_tui.jobs.command import command_from_words

    rest = words[1:] if words and words[0] == "--" else words
    suspicious = [w for w in rest if w.split("=", 1)[0] in RV_FLAGS] if len(rest) > 1 else []
    return command_from_words(words), suspicious


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="race every strategy for a batch command",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_request_options(p)
    p.add_argument("-f", "--follow", action="store_true",
                   help="wait for the winner, follow its logs, exit with its exit code")
    p.add_argument("--no-retry", dest="retry", action="store_false",
                   help="with -f: do not re-race a job that failed with a GPU hardware error")
    p.add_argument("--no-sync", dest="sync", action="store_false",
                   help="run the command as given in your remote home: no code sync, venv or snapshot")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=main)


# ----------------------------------------------------------------------------- the command

async def main(args: argparse.Namespace) -> int:
    command, suspicious = split_command(list(args.cmd))
    if not command.strip():
        raise RvError("rv run needs a command", hint="rv run [OPTIONS] -- python train.py")
    if suspicious:
        err(f"rv: warning: {' '.join(suspicious)} after the command are passed to the command, not to rv "
            "(put rv options before the command)")
    config = load(args)
    request = build_request(args, config, command)
    async with cluster_from_args(args) as cluster:
        launch = await _launch.prepare_launch(
            cluster, config, request, command, cwd=Path.cwd(), name=args.name, dry_run=args.dry_run,
            say=None if args.json else (lambda m: err(f"rv: {m}")),
            progress=None if args.json else _progress_printer(),
            max_strategies=args.max_strategies, workspace=getattr(args, "sync", True))
        if args.dry_run:
            print_launch(launch, args.json)
            return 0
        if args.follow and getattr(args, "retry", True):
            return await run_with_hardware_retry(cluster, launch, args)
        return await run_race(cluster, launch.entries, args, launch.request, launch.group_id,
                              follow=args.follow, launch=launch)


async def run_with_hardware_retry(cluster: Cluster, launch: _launch.Launch, args: argparse.Namespace) -> int:
    """``rv run -f``, racing again without the failed node(s) after a GPU hardware failure."""
    from rv_tui.jobs import retry as hw

    decisions: list[hw.RetryDecision] = []
    attempt = 0
    last: dict[str, Any] = {}

    def done(code: int) -> int:
        if args.json and "json" in last:
            print_json({**last["json"], "retries": [d.to_json() for d in decisions]})
        return code

    while True:
        last.clear()
        code = await run_race(cluster, launch.entries, args, launch.request, launch.group_id, follow=True,
                              launch=launch, finished=last)
        result: RaceResult | None = last.get("result")
        if code == 0 or result is None or result.winner_id is None:
            return done(code)
        ended: JobEnded | None = last.get("ended")
        if ended is None or ended.state not in TERMINAL_STATES:
            # the job vanished or its state is unknown: it may still be running; never re-race
            if not args.json:
                err(f"rv: not retrying: job {result.winner_id}'s final state is unknown")
            return done(code)
        winner = last.get("winner")
        info = result.winner_info if ended.job_id == result.winner_id else None
        decision = await hw.diagnose(
            cluster, ended.job_id, attempt=attempt, name=winner.submission.name if winner else None,
            nodes=tuple(info.nodes) if info else (), num_nodes=winner.submission.nodes if winner else None,
            final_state=ended.state)
        decisions.append(decision)
        if not decision.retry:
            if decision.hardware and not args.json:
                err(f"rv: not retrying: {decision.reason}")
            return done(code)
        if not args.json:
            ran = f" after {decision.runtime_s} s" if decision.runtime_s is not None else ""
            err(f"rv: GPU hardware error on {', '.join(decision.failed_nodes)}{ran}: {decision.evidence}")
            err(f"rv: retry {attempt + 1}/{hw.MAX_RETRIES}: racing again without "
                f"{', '.join(hw.union_excludes(launch.request.exclude_nodes, decision.failed_nodes))}")
        launch = await hw.relaunch(cluster, launch, decision.failed_nodes, max_strategies=args.max_strategies)
        attempt += 1


def print_launch(launch: _launch.Launch, as_json: bool) -> None:
    """The dry run: the ranked strategies, then what the workspace step would do and send."""
    if as_json:
        plan = launch.plan.to_json() if hasattr(launch.plan, "to_json") else {}
        print_json({**plan, "launch": launch.to_json()})
        return
    print_plan(launch.plan, False)
    print()
    ws = launch.workspace
    print(f"job name: {launch.name}")
    print(f"command:  {launch.request.command}")
    if ws is None:
        print("workspace: none (--no-sync): the job runs in your remote home directory")
        return
    for note in ws.notes:
        print(f"note: {note}")
    if ws.project is None:
        return
    print(f"project:  {ws.project.name} (branch {ws.project.branch}) from {ws.project.root}")
    print(f"snapshot: {ws.snapshot} (created at submit)")
    print(f"runs in:  {ws.work_dir}" + (f" (you are in {ws.subdir}/)" if ws.subdir else ""))
    if ws.venv:
        print(f"venv:     {ws.venv} ({ws.deps_reason})")
        if ws.python is not None:
            print(f"python:   {ws.python.describe()}")
    else:
        print(f"venv:     none ({ws.deps_reason or 'no dependency management'})")
    if ws.sync_result is not None:
        _print_sync_plan(ws.sync_result, False)
    print("dry run: nothing was uploaded or submitted")


async def run_race(cluster: Cluster, entries: list[RaceEntry], args: argparse.Namespace, request: Request,
                   group_id: str, *, follow: bool, store: GroupStore | None = None,
                   launch: _launch.Launch | None = None, finished: dict[str, Any] | None = None) -> int:
    """Race ``entries``: without ``follow`` return after submission; with it, wait and follow.

    ``finished`` (a dict), for the hardware retry, receives ``result`` (the :class:`RaceResult`),
    ``winner`` (its entry) and ``json`` (the final ``--json`` object, then not printed here)."""
    store = store or GroupStore()
    timeout = parse_duration(args.wait_timeout) if getattr(args, "wait_timeout", None) else None
    race = Race(cluster, entries, group_id=group_id, kind="run", name=request.name or entries[0].submission.name,
                command=request.command, git=git_info(), store=store, timeout=timeout,
                leave=bool(getattr(args, "leave", False)) or not follow,
                after_submit=(lambda ids: launch.record_jobs(cluster, ids)) if launch is not None else None)
    show = event_printer(args.json)
    submitted = 0
    async with race:
        async for ev in race:
            show(ev)
            if ev.kind in (RaceEventKind.SUBMITTED, RaceEventKind.SUBMIT_FAILED):
                submitted += 1
            if not follow and submitted == len(entries):
                break
            if ev.kind in (RaceEventKind.NO_WINNER, RaceEventKind.TIMEOUT):
                break
    result = race.result
    if not follow:
        if not race.job_ids:
            raise RvError("no strategy could be submitted",
                          hint="; ".join(j.error or "" for j in (result.record.jobs if result.record else ())) or None)
        if args.json:
            print_json({"group_id": group_id, "job_ids": race.job_ids, **race_summary(result)})
        else:
            print(f"group {group_id}: {len(race.job_ids)} job(s) racing: {' '.join(race.job_ids)}")
            print(f"  follow with `rv ps`, `rv logs {race.job_ids[0]}`; stop with `rv stop {group_id}`")
        return 0
    if result.winner_id is None:
        if args.json:
            print_json(race_summary(result))
        raise RvError(f"no strategy started ({result.outcome})",
                      hint="see `rv ps -a`; jobs were cancelled" if not race.leave else "jobs left queued")
    winner = race.by_id.get(result.winner_id)
    multi = bool(winner and (winner.submission.meta.get("per_node_logs") or winner.submission.nodes > 1))
    ended = await follow_job(cluster, result.winner_id, quiet=args.json, multi_node=multi)
    code = ended.exit_code if ended is not None else 1
    state = ended.state if ended is not None else "UNKNOWN"
    last_job = ended.job_id if ended is not None else result.winner_id
    extra = {"final_job": last_job} if last_job != result.winner_id else {}
    if finished is not None:
        finished.update(result=result, winner=winner, ended=ended,
                        json={**race_summary(result), "state": state, "exit_code": code, **extra})
    if not args.json:
        chain = f" (checkpoint chain ended with job {last_job})" if extra else ""
        err(f"rv: job {result.winner_id} finished: {state} (exit {code}){chain}")
    elif finished is None:
        print_json({**race_summary(result), "state": state, "exit_code": code, **extra})
    return code


async def follow_job(cluster: Cluster, job_id: str, *, quiet: bool = False, multi_node: bool = False,
                     out: TextIO | None = None) -> JobEnded | None:
    """Follow a job to its end with :mod:`rv_tui.logs`, printing lines as ``rv logs`` does
    (``[nodeN]``/``[stderr]`` prefixes, collapsed progress bars); its :class:`JobEnded`.

    ``quiet`` (``--json``) prints nothing but still waits for the job's real exit code.
    """
    from rv_tui.cli.logs import Renderer

    stream = out or sys.stdout
    r = Renderer(stream, multi_node=multi_node, both_streams=True, raw=False, as_json=False,
                 tty=stream.isatty())
    ended: JobEnded | None = None
    try:
        async for ev in follow(cluster, job_id):
            if isinstance(ev, LogLine):
                if not quiet:
                    r.feed(ev)
            elif isinstance(ev, JobStatus):
                if quiet:
                    continue
                r.close_progress()
                if ev.state == UNREACHABLE:
                    err(f"rv: {ev.reason or 'Slurm is not answering'} (job {ev.job_id} keeps running)")
                elif ev.state == RESUBMITTED:
                    err(f"rv: checkpoint segment {ev.job_id} done; the chain {ev.reason or 'continues'}")
                elif ev.state == "PENDING":
                    err(f"rv: job {ev.job_id} is pending{f' ({ev.reason})' if ev.reason else ''}...")
                else:
                    err(f"rv: following job {ev.job_id} ({ev.state}); Ctrl-C stops following, not the job "
                        f"(`rv stop {job_id}` cancels it)")
            elif isinstance(ev, JobEnded):
                ended = ev
    finally:
        if not quiet:
            r.finish()
    return ended


def exit_code_of(info: JobInfo | None) -> int:
    """The job's real exit code; never 0 for a job that was killed, cancelled or timed out."""
    return _exit_code_of(info)
