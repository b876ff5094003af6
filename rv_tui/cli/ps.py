"""``rv ps`` (jobs grouped by race group) and ``rv stop`` (a job, its siblings, a name, or all).

Groups come from the local store merged with the records on the cluster's scratch, so jobs
submitted from another laptop are grouped too.  Pending reasons are shown in plain language
(:mod:`rv_tui.jobs.reasons`).  ``rv stop`` of one strategy's job cancels the whole race group;
ids that already ended are not an error.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rv_tui.cli.common import add_json_flag, ask_yes, cluster_from_args, err, print_json
from rv_tui.cluster.base import Cluster, JobInfo
from rv_tui.durations import format_human
from rv_tui.errors import RvError
from rv_tui.gpus import types_for_gres
from rv_tui.jobs.reasons import final_text, reason_text
from rv_tui.jobs.store import GroupRecord, GroupStore, fetch_remote_records, merge_records, read_segments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ps", aliases=["ls"], help="your jobs, grouped by request")
    p.add_argument("-a", "--all", action="store_true", help="include finished jobs of recent groups")
    add_json_flag(p)
    p.set_defaults(func=ps_main)
    s = sub.add_parser("stop", aliases=["cancel"], help="cancel a job (and its race siblings), a group or a name")
    s.add_argument("target", nargs="?", metavar="ID|NAME", help="job id, group id (g...) or job name")
    s.add_argument("--all", action="store_true", help="cancel every queued or running job of yours")
    s.add_argument("--yes", "-y", action="store_true", help="don't ask")
    add_json_flag(s)
    s.set_defaults(func=stop_main)


# ----------------------------------------------------------------------------- ps

def gpu_label(gres: str, fallback: str | None = None) -> str:
    """The strategy's GPU type, else the type in ``gpu:a6000:4`` (``-`` for CPU jobs)."""
    if fallback:
        return fallback
    parts = [p for p in gres.replace("gres/", "").split(":") if p]
    if len(parts) >= 2 and parts[0] == "gpu" and not parts[1].isdigit():
        return types_for_gres(parts[1]) or parts[1]
    return "gpu" if parts[:1] == ["gpu"] else "-"


def eta_text(eta: datetime | None, now: datetime | None) -> str:
    if eta is None or now is None:
        return ""
    secs = (eta - now).total_seconds()
    if secs < 120:
        return "starting soon"
    return f"starts in {format_human(secs)}"


def job_row(info: JobInfo | None, job_id: str, rec: GroupRecord | None, now: datetime | None) -> dict[str, Any]:
    seg = rec.segment_index(job_id) if rec else None
    gj = (rec.job(job_id) or (rec.job(rec.winner) if seg and rec.winner else None)) if rec else None
    state = info.state if info else ("GONE" if rec else "?")
    gtype = gpu_label(info.gres if info else "", gj.gpu_type if gj else None)
    topo = f"{gj.nodes}x{gj.gpus_per_node}" if gj else (f"{info.num_nodes}x?" if info else "")
    where = ""
    eta = ""
    if info is not None:
        if info.state == "PENDING":
            where = reason_text(info.reason) or "queued"
            eta = eta_text(info.start_time, now)
        elif info.is_terminal:
            where = final_text(info.state, info.exit_code, info.exit_signal)  # restarts: own column
        elif info.nodes:
            where = ",".join(info.nodes)
    return {
        "job_id": job_id, "state": state, "gpu_type": gtype, "topology": topo,
        "partition": info.partition if info else (gj.partition if gj else ""),
        "where": where, "reason": info.reason if info else None, "eta": eta,
        "elapsed": format_human(info.elapsed_s) if info else "",
        "elapsed_s": info.elapsed_s if info else None,
        "name": info.name if info else (gj.name if gj else ""),
        "winner": bool(rec and (rec.current_job or rec.winner) == job_id),
        "segment": seg,  # position in the winner's checkpoint chain (1 = the winner), else None
        "restarts": info.restart_count if info else 0,  # Slurm requeues/restarts of this job
        # final exit status of an ended job (never 0 when it did not complete), else None
        "exit_code": info.exit_code if info and info.is_terminal else None,
        "exit_signal": info.exit_signal if info and info.is_terminal else None,
    }


async def with_chains(cluster: Cluster, records: list[GroupRecord]) -> list[GroupRecord]:
    """Records whose checkpoint winner's chain was not read with the remote records (the demo,
    or an unreadable group.json) get it from ``<group_dir>/segments``."""
    todo = [i for i, r in enumerate(records[:30]) if r.winner and not r.segments
            and (r.job(r.winner) is not None and r.job(r.winner).kind == "checkpoint")]  # type: ignore[union-attr]
    if not todo:
        return records
    chains = await asyncio.gather(*(read_segments(cluster, records[i].id) for i in todo))
    out = list(records)
    for i, segs in zip(todo, chains):
        if segs:
            out[i] = out[i].with_(segments=segs)
    return out


def group_state(rows: Sequence[dict[str, Any]]) -> str:
    for r in rows:
        if r["state"] in ("RUNNING", "CONFIGURING", "COMPLETING"):
            return r["state"]
    if any(r["state"] == "PENDING" for r in rows):
        return "PENDING"
    return rows[0]["state"] if rows else "?"


async def collect(cluster: Cluster, store: GroupStore, include_finished: bool) -> dict[str, Any]:
    """Active jobs grouped by request (+ other jobs); what both ps outputs are rendered from."""
    active = await cluster.jobs()
    records = await with_chains(cluster, merge_records(store.all(), await fetch_remote_records(cluster)))
    index: dict[str, GroupRecord] = {}
    for rec in records:
        for jid in rec.all_job_ids:  # a checkpoint chain's later segments belong to the group
            index.setdefault(jid, rec)
    by_id = {j.job_id: j for j in active}
    history_note: str | None = None
    wanted_groups: list[GroupRecord] = []
    for rec in records:
        live = any(j in by_id for j in rec.all_job_ids)
        if live or include_finished:
            wanted_groups.append(rec)
    if include_finished:
        missing = [j for rec in wanted_groups[:30] for j in rec.all_job_ids if j not in by_id]
        if missing:
            for info in await cluster.jobs(missing):
                by_id.setdefault(info.job_id, info)
        gone = [j for j in missing if j not in by_id]
        if gone:
            history_note = await _history_note(cluster, gone)
    try:
        now = await cluster.now()
    except Exception:
        now = None
    groups = []
    for rec in (wanted_groups[:30] if include_finished else wanted_groups):
        rows = [job_row(by_id.get(j), j, rec, now) for j in rec.all_job_ids]
        groups.append({
            "group_id": rec.id, "name": rec.name, "kind": rec.kind, "command": rec.command,
            "created_at": rec.created_at, "git": rec.git.tag if rec.git else "", "winner": rec.winner,
            "segments": list(rec.segments), "current_job": rec.current_job,
            "state": group_state(rows), "jobs": rows,
        })
    others = [job_row(j, j.job_id, None, now) for j in active if j.job_id not in index]
    out: dict[str, Any] = {"groups": groups, "other": others}
    if history_note:
        out["history_note"] = history_note
    return out


async def _history_note(cluster: Cluster, job_ids: list[str]) -> str | None:
    """Why jobs that left the queue have no final state: accounting off or not answering."""
    ask = getattr(cluster, "history", None)
    if ask is None:
        return None
    try:
        hist = await ask(job_ids)
    except Exception:  # noqa: BLE001 - a note is a nicety
        return None
    return None if hist.available else hist.note


def render(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for g in data["groups"]:
        cmd = g["command"] or "(interactive)"
        if len(cmd) > 50:
            cmd = cmd[:47] + "..."
        tag = f"  [{g['git']}]" if g["git"] else ""
        lines.append(f"{g['name'][:24]:<25}{g['state']:<11}{g['group_id']}  {cmd}{tag}")
        for r in g["jobs"]:
            mark = "*" if r["winner"] else " "
            extra = f"  {r['eta']}" if r["eta"] else ""
            if r.get("segment"):
                extra += f"  [segment {r['segment']}]"
            if r.get("restarts"):
                extra += f"  [restarted {r['restarts']}x]"
            lines.append(f"  {mark}{r['job_id']:<10}{r['state']:<11}{r['gpu_type'] + ':' + r['topology']:<14}"
                         f"{r['elapsed']:<8}{r['where']}{extra}")
    if data["other"]:
        if lines:
            lines.append("")
        lines.append(f"{'JOB':<11}{'NAME':<20}{'STATE':<11}{'GPU':<12}{'ELAPSED':<9}WHERE")
        for r in data["other"]:
            restarts = f"  [restarted {r['restarts']}x]" if r.get("restarts") else ""
            lines.append(f"{r['job_id']:<11}{r['name'][:19]:<20}{r['state']:<11}{r['gpu_type']:<12}"
                         f"{r['elapsed']:<9}{r['where']}{('  ' + r['eta']) if r['eta'] else ''}{restarts}")
    if data.get("history_note"):
        lines += ["", f"note: {data['history_note']}"]
    return "\n".join(lines) if lines else "no jobs"


async def reap_orphaned_losers(cluster: Cluster, data: dict[str, Any]) -> list[str]:
    """Pending siblings of a group whose winner is known: cancel them (safety net for old scripts).
    The winner's checkpoint segments are the same job continuing, never losers."""
    todo = []
    for g in data["groups"]:
        if g["winner"]:
            keep = {g["winner"], *g.get("segments", ())}
            todo += [r["job_id"] for r in g["jobs"] if r["job_id"] not in keep and r["state"] == "PENDING"]
    if todo:
        await cluster.cancel(todo)
    return todo


async def ps_main(args: argparse.Namespace) -> int:
    store = GroupStore()
    async with cluster_from_args(args) as cluster:
        data = await collect(cluster, store, args.all)
        reaped = await reap_orphaned_losers(cluster, data)
        if reaped:
            data = await collect(cluster, store, args.all)
    for path in store.unreadable:
        err(f"rv: warning: skipped unreadable group record {path} (left in place; delete it if stale)")
    if args.json:
        print_json({**data, "reaped": reaped})
    else:
        print(render(data))
        if reaped:
            err(f"rv: cancelled {len(reaped)} leftover race loser(s): {' '.join(reaped)}")
    return 0


# ----------------------------------------------------------------------------- stop

async def resolve_targets(cluster: Cluster, store: GroupStore, target: str) -> tuple[list[str], GroupRecord | None]:
    """Job ids to cancel for ``target`` (job id, group id, or name) and the group it belongs to."""
    records = await with_chains(cluster, merge_records(store.all(), await fetch_remote_records(cluster)))
    for rec in records:
        if rec.id == target:
            return rec.all_job_ids, rec
    if target.replace("_", "").isdigit():
        for rec in records:
            if target in rec.all_job_ids:
                return rec.all_job_ids, rec
        return [target], None
    named = [r for r in records if r.name == target]
    if named:
        return named[0].all_job_ids, named[0]
    jobs = [j for j in await cluster.jobs() if j.name == target]
    if jobs:
        return [j.job_id for j in jobs], None
    raise RvError(f"no job, group or name {target!r}", hint="see `rv ps -a`")


async def stop_main(args: argparse.Namespace) -> int:
    if not args.all and not args.target:
        raise RvError("rv stop needs a job id, group id or name (or --all)")
    store = GroupStore()
    async with cluster_from_args(args) as cluster:
        if args.all:
            active = [j for j in await cluster.jobs() if not j.is_terminal]
            ids = [j.job_id for j in active]
            if ids and not args.yes and not ask_yes(f"Cancel all {len(ids)} job(s)?", default=False):
                if not __import__("sys").stdin.isatty():
                    raise RvError("refusing to cancel every job without confirmation", hint="add --yes")
                return 1
            rec = None
        else:
            ids, rec = await resolve_targets(cluster, store, args.target)
        before = {j.job_id: j.state for j in await cluster.jobs(ids)} if ids else {}
        if ids and rec is None and not args.all and not before:
            # not in rv's records and Slurm does not know it: say so instead of "already ended"
            raise RvError(f"no job {args.target} on the cluster: Slurm does not know it and rv did not "
                          "launch it (a typo, or a job that ended long ago)", hint="see `rv ps -a`")
        if ids:
            await cluster.cancel(ids)
        if rec is not None:
            # a segment that was resubmitting itself as we cancelled: its successor is new
            late = [j for j in await read_segments(cluster, rec.id) if j not in ids]
            if late:
                before.update({j.job_id: j.state for j in await cluster.jobs(late)})
                await cluster.cancel(late)
                ids = ids + late
    if rec is not None:
        store_rec = store.get(rec.id)
        if store_rec is not None and store_rec.state == "racing":
            store.save(store_rec.with_(state="cancelled"))
    live = [j for j in ids if before.get(j) not in (None,) and before[j] not in
            ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")]
    if args.json:
        print_json({"cancelled": live, "already_ended": [j for j in ids if j not in live],
                    "group_id": rec.id if rec else None})
    else:
        if live:
            print(f"cancelled {len(live)} job(s): {' '.join(live)}" + (f" (group {rec.id})" if rec else ""))
        else:
            print("nothing to cancel: " + (" ".join(ids) + " already ended" if ids else "no jobs"))
    return 0
