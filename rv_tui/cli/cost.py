"""``rv cost``: SUs for a job shape, per GPU type, from the one GPU table (no cluster needed).

SU = rate x GPUs x hours.  Without ``-t`` every type that can take the GPU count is listed,
cheapest first; MIG is shown as free.
"""

from __future__ import annotations

import argparse
from typing import Any

from rv_tui.cli.plan_view import table
from rv_tui.durations import format_slurm, parse_duration
from rv_tui.errors import RvError
from rv_tui.gpus import GPU_SPECS, resolve_gpu_type


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="estimate SU cost per GPU type", description=__doc__)
    p.add_argument("-g", "--gpu", type=int, default=1, metavar="N", help="GPUs (default 1)")
    p.add_argument("-t", "--type", default=None, metavar="TYPE", help="one GPU type (default: all)")
    p.add_argument("--time", default="2:59:00", metavar="DURATION", help="walltime (default 2:59:00)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(func=main)


def cost_rows(gpus: int, time_s: int, gpu_type: str | None = None) -> list[dict[str, Any]]:
    """One row per type that can take *gpus*, sorted by total SU (cheapest first)."""
    if gpus < 1:
        raise RvError(f"--gpu must be at least 1 (got {gpus})")
    types = [resolve_gpu_type(gpu_type)] if gpu_type else list(GPU_SPECS)
    rows = []
    for name in types:
        spec = GPU_SPECS[name]
        if gpus > spec.max_per_user or (name == "mig" and gpus != 1):
            if gpu_type:
                raise RvError(f"{name} allows at most {1 if name == 'mig' else spec.max_per_user} "
                              f"GPUs (requested {gpus})")
            continue
        rows.append({
            "gpu_type": name, "label": spec.label, "gpus": gpus, "time_s": time_s,
            "su_per_gpu_hour": spec.su_per_gpu_hour, "su_per_hour": round(spec.su_per_gpu_hour * gpus, 2),
            "total_su": round(spec.su_cost(gpus, time_s), 2), "free": spec.free,
            "vram_gb": spec.vram_gb,
        })
    if not rows:
        limits = ", ".join(f"{n} {1 if n == 'mig' else s.max_per_user}" for n, s in GPU_SPECS.items())
        raise RvError(f"no GPU type takes {gpus} GPUs per user (most per type: {limits})",
                      hint="use fewer GPUs (-g)")
    rows.sort(key=lambda r: (r["total_su"], r["gpu_type"]))
    return rows


def render(rows: list[dict[str, Any]], gpus: int, time_s: int) -> str:
    body = [[r["gpu_type"], f"{r['vram_gb']} GB",
             "free" if r["free"] else f"{r['su_per_gpu_hour']:,.2f}",
             "free" if r["free"] else f"{r['su_per_hour']:,.2f}",
             "free" if r["free"] else f"{r['total_su']:,.2f}"] for r in rows]
    head = f"{gpus} GPU(s) for {format_slurm(time_s)}"
    return head + "\n" + table(["type", "VRAM", "SU/GPU-h", "SU/h", "total SU"], body, {1, 2, 3, 4})


async def main(args: argparse.Namespace) -> int:
    try:
        time_s = parse_duration(args.time)
    except RvError as exc:
        raise RvError(f"--time: {exc.message}", hint=exc.hint) from None
    rows = cost_rows(args.gpu, time_s, args.type)
    if args.json:
        from rv_tui.cli.common import print_json

        print_json({"gpus": args.gpu, "time_s": time_s, "types": rows})
    else:
        print(render(rows, args.gpu, time_s))
    return 0
