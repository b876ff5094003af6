"""``rv status``: a quick dashboard: connection, GPU availability per type/partition, your jobs.

Uses only the Cluster interface (one snapshot + one job listing), so ``--demo`` shows the same.
Connection failures print a clear line and exit 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rv_tui.cli.plan_view import table
from rv_tui.errors import RvError
from rv_tui.gpus import GPU_SPECS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="connection, GPU availability and your jobs", description=__doc__)
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(func=main)


async def gather_status(cluster: Any) -> dict[str, Any]:
    snap = await cluster.snapshot()
    jobs = await cluster.jobs()
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
    }


def render(st: dict[str, Any]) -> str:
    c = st["connection"]
    lines = [f"Connection OK ({c['cluster']} as {c['user']}{', demo' if c['demo'] else ''}); "
             f"cluster time {st['cluster_time']}", "", "GPUs by type (each node once):"]
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

    load(args)  # a broken config.toml is the user's error (rv: error:, exit 2), not a connection failure
    try:
        async with cluster_from_args(args) as cluster:
            st = await gather_status(cluster)
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
        print(render(st))
    return 0
