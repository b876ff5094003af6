"""``rv logs``: show or follow a job's (per-node, merged) logs; ``--pull`` downloads them.

A running or pending job is followed until it ends and ``rv logs`` exits with the job's exit
code; a finished job's logs are printed once (the last ``--max-lines`` of them, bounded memory).
All the work is in :mod:`rv_tui.logs`; this module only renders its events.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TextIO

from rv_tui.cli.common import add_json_flag, cluster_from_args, err
from rv_tui.errors import RvError
from rv_tui.fsutil import download_to
from rv_tui.logs import (
    JobEnded,
    JobStatus,
    LogLine,
    LogRing,
    ProgressCollapser,
    follow,
    latest_job_id,
)
from rv_tui.logs.follow import job_info, resolve
from rv_tui.logs.ring import DEFAULT_MAX_LINES
from rv_tui.remote.errors import RemoteFileNotFound

#: What Slurm accepts as a job id (plain, array ``123_4``, het ``123+1``); checked before connecting.
_JOB_ID_RE = re.compile(r"^\d+(?:_\d+|_\[[\d,\-]+\])?(?:\+\d+)?$")

_DIM, _RED, _RESET, _CLEAR = "\x1b[2m", "\x1b[31m", "\x1b[0m", "\x1b[K"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="show or follow a job's logs (all nodes merged)",
                       description=__doc__)
    p.add_argument("job_id", nargs="?", help="job id (default: your most recent job)")
    p.add_argument("--node", type=int, default=None, help="only this node's files (multi-node jobs)")
    p.add_argument("--err", action="store_true", help="stderr only (with --out: both)")
    p.add_argument("--out", action="store_true", help="stdout only (with --err: both)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow (the default for running and pending jobs)")
    p.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N lines of each file")
    p.add_argument("--raw", action="store_true", help="keep progress-bar redraws (\\r lines) as they are")
    p.add_argument("--pull", nargs="?", const=".", default=None, metavar="DIR",
                   help="download every log file of the job (all nodes) into DIR (default: .); "
                        "a bare job id after --pull is the job, not a directory (./12345 is one)")
    p.add_argument("--max-lines", type=int, default=DEFAULT_MAX_LINES, metavar="N",
                   help=f"lines held for a finished job's one-shot view (default {DEFAULT_MAX_LINES})")
    add_json_flag(p)
    p.set_defaults(func=main)


def _streams(args: argparse.Namespace) -> tuple[str, ...]:
    if args.err and not args.out:
        return ("err",)
    if args.out and not args.err:
        return ("out",)
    return ("out", "err")


class Renderer:
    """Prints LogLines: node prefixes, stderr marks, and progress bars collapsed to their latest
    state (redrawn in place on a terminal, held back to the last state on a pipe)."""

    def __init__(self, out: TextIO, *, multi_node: bool, both_streams: bool, raw: bool,
                 as_json: bool, tty: bool) -> None:
        self.out = out
        self.multi_node = multi_node
        self.both = both_streams
        self.raw = raw
        self.json = as_json
        self.tty = tty and not as_json
        self.collapser = None if (raw or self.tty) else ProgressCollapser()
        self._open_progress: tuple[int | None, str] | None = None
        self.printed = 0

    def prefix(self, line: LogLine) -> str:
        parts = []
        if self.multi_node:
            parts.append("[batch]" if line.node is None else f"[node{line.node}]")
        if self.both and line.stream == "err":
            parts.append("[stderr]")
        if not parts:
            return ""
        text = " ".join(parts) + " "
        if self.tty:
            return (_RED if line.stream == "err" else _DIM) + text + _RESET
        return text

    def feed(self, line: LogLine) -> None:
        if self.collapser is not None:
            for ln in self.collapser.feed(line):
                self._emit(ln)  # type: ignore[arg-type]
        else:
            self._emit(line)

    def _emit(self, line: LogLine) -> None:
        self.printed += 1
        if self.json:
            self.out.write(json.dumps(line.to_json(raw=self.raw)) + "\n")
            return
        text = line.text if self.raw else line.display
        if self.tty and not self.raw and line.is_progress:
            if self._open_progress is not None and self._open_progress != line.source_key:
                self.out.write("\n")
            self.out.write("\r" + self.prefix(line) + text + _CLEAR)
            self._open_progress = line.source_key
            self.out.flush()
            return
        self.close_progress()
        self.out.write(self.prefix(line) + text + "\n")
        self.out.flush()

    def close_progress(self) -> None:
        if self._open_progress is not None:
            self.out.write("\n")
            self._open_progress = None

    def finish(self) -> None:
        if self.collapser is not None:
            for ln in self.collapser.flush():
                self._emit(ln)  # type: ignore[arg-type]
        self.close_progress()
        self.out.flush()


def resolve_pull_args(job_id: str | None, pull: str | None) -> tuple[str | None, str | None]:
    """(job id, pull directory) whatever the flag order.

    ``--pull`` takes an optional DIR, so argparse reads ``rv logs --pull 12345`` as DIR=12345 and
    ``rv logs --pull 12345 out`` as DIR=12345, job=out.  A value shaped like a job id is always the
    job (write ``./12345`` for a directory of that name); the other word is then the directory.
    """
    if pull is None or not _JOB_ID_RE.match(pull):
        return job_id, pull
    if job_id is None:
        return pull, "."
    if _JOB_ID_RE.match(job_id):
        raise RvError(f"two job ids given ({job_id} and {pull})",
                      hint=f"rv logs {job_id} --pull DIR; for a directory named {pull} write ./{pull}")
    return pull, job_id


async def main(args: argparse.Namespace) -> int:
    if args.max_lines < 1:
        err("rv: --max-lines must be at least 1")
        return 2
    if args.tail is not None and args.tail < 0:
        err("rv: --tail must be 0 or more")
        return 2
    args.job_id, args.pull = resolve_pull_args(args.job_id, args.pull)
    if args.job_id is not None and not _JOB_ID_RE.match(args.job_id):
        raise RvError(f"{args.job_id!r} is not a Slurm job id",
                      hint="give a job id like 1234567 (see `rv ps`), or none for your latest job")
    async with cluster_from_args(args) as cluster:
        job_id = args.job_id or await latest_job_id(cluster)
        if args.pull is not None:
            return await _pull(cluster, job_id, Path(args.pull), args.json)
        return await _show(cluster, job_id, args)


async def _show(cluster, job_id: str, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    streams = _streams(args)
    info = await job_info(cluster, job_id)
    logs = await resolve(cluster, job_id, info)
    logs.select(node=args.node, streams=streams)  # validate --node before anything is printed
    finished = info is None or info.is_terminal
    r = Renderer(sys.stdout, multi_node=logs.multi_node, both_streams=len(streams) == 2,
                 raw=args.raw, as_json=args.json, tty=sys.stdout.isatty())
    # a finished checkpoint segment shows its own logs; -f follows the rest of its chain live
    chain = not finished or bool(getattr(args, "follow", False))
    ring = LogRing(args.max_lines) if finished and not chain else None
    # a finished job shows at most --max-lines: only that tail of each file is read (on the cluster)
    last = args.tail if args.tail is not None else (args.max_lines if finished else None)
    ended: JobEnded | None = None
    async for ev in follow(cluster, job_id, node=args.node, streams=streams, last=last,  # type: ignore[arg-type]
                           known=(info, logs), chain=chain):
        if isinstance(ev, LogLine):
            if ring is not None:
                ring.append(ev)
            else:
                r.feed(ev)
        elif isinstance(ev, JobStatus):
            if not args.json and ev.state == "RESUBMITTED":  # a checkpoint chain hands over
                r.close_progress()
                err(f"rv: checkpoint segment {ev.job_id} done; the chain {ev.reason or 'continues'}")
            elif not args.json and ev.state == "UNKNOWN":  # slurmctld not answering: still following
                r.close_progress()
                err(f"rv: job {ev.job_id}: {ev.reason or 'Slurm is not answering'}")
            elif not args.json and ev.state == "PENDING":
                why = f" ({ev.reason})" if ev.reason else ""
                err(f"rv: job {ev.job_id} is pending{why}; waiting for it to start...")
            elif not args.json and not finished:
                r.close_progress()
                err(f"rv: following job {job_id} ({ev.state}); Ctrl-C stops following, not the job")
        elif isinstance(ev, JobEnded):
            ended = ev
    if ring is not None:
        if (ring.dropped or (args.tail is None and len(ring) >= args.max_lines)) and not args.json:
            err(f"rv: only the last {len(ring)} lines are shown (use --max-lines, or --pull for the full files)")
        for line in ring:
            r.feed(line)
    r.finish()
    if finished and not chain and not args.json and ended is not None and ended.state == "COMPLETED":
        from rv_tui.jobs.store import next_segment

        nxt = await next_segment(cluster, job_id, info)
        if nxt:
            err(f"rv: this checkpoint segment's chain continues as job {nxt} (`rv logs -f {job_id}` follows it)")
    if ended is None:
        return 1
    if args.json:
        print(json.dumps(ended.to_json()))
    else:
        how = f"exit {ended.exit_code}"
        err(f"rv: job {job_id} {'finished' if not finished else 'ended'}: {ended.state} ({how})")
    # a job we followed to its end (or into its checkpoint chain): exit with its code; an
    # already finished job: we showed it
    return ended.exit_code if not finished or ended.job_id != job_id else 0


async def _pull(cluster, job_id: str, dest: Path, as_json: bool) -> int:  # type: ignore[no-untyped-def]
    info = await job_info(cluster, job_id)
    logs = await resolve(cluster, job_id, info)
    got: list[dict[str, object]] = []
    dest.mkdir(parents=True, exist_ok=True)
    for src in logs.all:
        target = dest / os.path.basename(src.path)
        try:
            size = await download_to(cluster, src.path, target)
        except RemoteFileNotFound:
            continue
        got.append({"path": str(target), "remote": src.path, "node": src.node,
                    "stream": src.stream, "bytes": size})
    if as_json:
        print(json.dumps({"job_id": job_id, "files": got}))
    else:
        for g in got:
            print(f"{g['path']}  ({g['bytes']} bytes)")
    if not got:
        err(f"rv: no log files of job {job_id} exist yet")
        return 1
    return 0
