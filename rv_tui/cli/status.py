"""``rv status``: a quick dashboard: connection, SU balance, storage, GPU availability per
type/partition, your jobs.

Uses only the Cluster interface (a snapshot, a job listing and the site tools ``allocations`` /
``hdquota``, all concurrently over the one connection), so ``--demo`` shows the same.  A cluster
without the site tools simply has no balance/storage sections.  Connection failures print a clear
line and exit 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from rv_tui.cli.plan_view import table
from rv_tui.errors import RvError
from rv_tui.gpus import GPU_SPECS
from rv_tui.account import SiteInfo, fetch_site_info, format_size, format_su


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="connection, GPU availability and your jobs", description=__doc__)
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(func=main)


async def gather_status(cluster: Any, *, account: str | None = None) -> dict[str, Any]:
    """Everything ``rv status`` shows; ``account`` picks the balance row (config default)."""
    snap, jobs, site = await asyncio.gather(cluster.snapshot(), cluster.jobs(), fetch_site_info(cluster))
    avail = []
    for a in snap.availability():
        q = snap.queues.get(a.partition)
        avail.append({
            "gpu_type": a.gpu_type, "partition": a.partition, "gpus_free": a.gpus_free,
            "gpus_total": a.gpus_total, "max_free_on_one_node": a.max_free_on_one_node,
            "pending_jobs": q.pending_jobs if q else 0, "running_jobs": q.running_jobs if q else 0,
            "su_per_gpu_hour": GPU_SPECS[a.gpu_type].su_per_gpu_hour if a.gpu_type in GPU_SPECS else None,
        })
    by_type = {t: {"free": f, "total": n} for t, (f, n) in sorted(snap.free_by_type().items())}
    states: dict[str, int] = {}
    for j in jobs:
        states[j.state] = states.get(j.state, 0) + 1
    return {
        "connection": {"ok": True, "cluster": cluster.name, "user": cluster.user,
                       "demo": cluster.is_demo},
        "cluster_time": snap.taken_at.isoformat(),
        "gpus_by_type": by_type,
        "availability": avail,
        "jobs": {"total": len(jobs), "by_state": states},
        **site_json(site, account),
    }


def site_json(site: SiteInfo, account: str | None) -> dict[str, Any]:
    """``account`` (the balance row, or None) and ``storage`` (rows, possibly empty)."""
    data = site.to_json(account)
    return {"account": data["account"], "allocations": data["allocations"], "storage": data["storage"]}


_COLOURS = {"red": "\x1b[31m", "yellow": "\x1b[33m", "green": "\x1b[32m"}


def _paint(text: str, level: str, colour: bool) -> str:
    return f"{_COLOURS[level]}{text}\x1b[0m" if colour and level in _COLOURS else text


def render_site(st: dict[str, Any], *, colour: bool = False) -> list[str]:
    """The balance line and the storage table (nothing on a cluster without the site tools)."""
    lines: list[str] = []
    acct = st.get("account")
    if acct:
        lines.append(f"Account {acct['account']} | {format_su(acct['available_su'])} SUs remaining")
        others = [a for a in st.get("allocations", []) if a["account"] != acct["account"]]
        if others:
            lines.append("  other accounts: " + ", ".join(
                f"{a['account']} {format_su(a['available_su'])}" for a in others))
    storage = st.get("storage") or []
    if storage:
        rows = []
        for s in storage:
            pct = f"{s['use_percent']:g}%"
            # pad before colouring so escape codes do not upset the table's widths
            rows.append([s["type"], s["location"],
                         f"{format_size(s['used_bytes'], s['size_bytes'])}/{format_size(s['size_bytes'])}",
                         pct])
        text = table(["storage", "location", "used/total", "used %"], rows, {3})
        if colour:
            out = text.splitlines()
            for i, s in enumerate(storage, start=len(out) - len(storage)):
                pct = f"{s['use_percent']:g}%"
                head, _, tail = out[i].rpartition(pct)
                out[i] = head + _paint(pct, s["level"], True) + tail
            text = "\n".join(out)
        lines += (["", text] if lines else [text])
    return lines


def render(st: dict[str, Any], *, colour: bool = False) -> str:
    c = st["connection"]
    lines = [f"Connection OK ({c['cluster']} as {c['user']}{', demo' if c['demo'] else ''}); "
             f"cluster time {st['cluster_time']}"]
    site = render_site(st, colour=colour)
    if site:
        lines += [""] + site
    lines += ["", "GPUs by type (each node once):"]
    lines.append(table(["type", "free/total"],
                       [[t, f"{v['free']}/{v['total']}"] for t, v in st["gpus_by_type"].items()],
                       {1}))
    lines += ["", "per partition:"]
    lines.append(table(
        ["type", "partition", "free/total", "best node", "running", "pending", "SU/GPU-h"],
        [[a["gpu_type"], a["partition"], f"{a['gpus_free']}/{a['gpus_total']}",
          str(a["max_free_on_one_node"]), str(a["running_jobs"]), str(a["pending_jobs"]),
          "free" if not a["su_per_gpu_hour"] else f"{a['su_per_gpu_hour']:.2f}"]
         for a in st["availability"]], {2, 3, 4, 5, 6}))
    j = st["jobs"]
    detail = ", ".join(f"{n} {s.lower()}" for s, n in sorted(j["by_state"].items()))
    lines += ["", f"your jobs: {j['total']}" + (f" ({detail})" if detail else "")]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    from rv_tui.cli.common import cluster_from_args, load, print_json

    config = load(args)  # a broken config.toml is the user's error (rv: error:, exit 2), not a connection failure
    account = config.defaults.account if config is not None else None
    try:
        async with cluster_from_args(args) as cluster:
            st = await gather_status(cluster, account=account)
    except RvError as exc:
        if args.json:
            print_json({"connection": {"ok": False, "error": exc.message, "hint": exc.hint}})
        else:
            print(f"Connection FAILED: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    if args.json:
        print_json(st)
    else:
        print(render(st, colour=sys.stdout.isatty()))
    return 0
