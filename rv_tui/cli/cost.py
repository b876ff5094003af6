"""``rv cost``: SUs for a job shape, per GPU type, from the one GPU table.

SU = rate x GPUs x hours.  Without ``-t`` every type that can take the GPU count is listed,
cheapest first; MIG is shown as free.  When a cluster is configured (or with ``--demo``) the
account's remaining SU balance is read with the site tool ``allocations`` and each estimate says
whether it fits; an unreachable cluster or one without the tool only drops that part
(``--offline`` skips the lookup).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from rv_tui.cli.plan_view import table
from rv_tui.durations import format_slurm, parse_duration
from rv_tui.errors import RvError
from rv_tui.gpus import GPU_SPECS, resolve_gpu_type


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="estimate SU cost per GPU type", description=__doc__)
    p.add_argument("-g", "--gpu", type=int, default=1, metavar="N", help="GPUs (default 1)")
    p.add_argument("-t", "--type", default=None, metavar="TYPE",
                   help="one GPU type (default: config defaults.gpu_type, else every type "
                        "defaults.partition serves, else all)")
    p.add_argument("--time", default=None, metavar="DURATION",
                   help="walltime (default: config defaults.time, else 2:59:00)")
    p.add_argument("--account", default=None, help="whose SU balance to compare with (default from config)")
    p.add_argument("--offline", action="store_true", help="do not ask the cluster for the SU balance")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(func=main)


#: The whole balance lookup (connect + allocations) gives up after this long.
BALANCE_TIMEOUT_S = 25.0


async def fetch_balance(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str | None]:
    """(the account's ``allocations`` row as JSON, why it is missing); never raises.

    Nothing is asked when no cluster is configured (the demo is used only with ``--demo``).
    """
    from rv_tui.cli.common import cluster_from_args, load
    from rv_tui.account import fetch_site_info

    if args.offline:
        return None, None
    try:
        config = load(args)
    except Exception as exc:  # noqa: BLE001 - cost works without a config
        return None, f"config: {exc}"
    if not getattr(args, "demo", False) and (config is None or config.connection is None):
        return None, None
    account = args.account or (config.defaults.account if config is not None else None)

    async def ask() -> tuple[dict[str, Any] | None, str | None]:
        async with cluster_from_args(args) as cluster:
            site = await fetch_site_info(cluster)
        acct = site.account(account)
        if acct is None:
            return None, site.error or "the cluster has no `allocations` tool (or lists no account)"
        return acct.to_json(), None

    try:
        return await asyncio.wait_for(ask(), BALANCE_TIMEOUT_S)
    except asyncio.TimeoutError:
        return None, f"the cluster did not answer within {BALANCE_TIMEOUT_S:.0f} s"
    except Exception as exc:  # noqa: BLE001 - the balance is optional
        return None, getattr(exc, "message", None) or str(exc) or type(exc).__name__


def with_balance(rows: list[dict[str, Any]], balance: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each row plus ``fits_balance`` (None when the balance is unknown)."""
    avail = balance["available_su"] if balance else None
    return [{**r, "fits_balance": None if avail is None else (r["free"] or r["total_su"] <= avail)}
            for r in rows]


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


def render(rows: list[dict[str, Any]], gpus: int, time_s: int, balance: dict[str, Any] | None = None) -> str:
    from rv_tui.account import format_su

    body = [[r["gpu_type"], f"{r['vram_gb']} GB",
             "free" if r["free"] else f"{r['su_per_gpu_hour']:,.2f}",
             "free" if r["free"] else f"{r['su_per_hour']:,.2f}",
             "free" if r["free"] else f"{r['total_su']:,.2f}"] for r in rows]
    headers = ["type", "VRAM", "SU/GPU-h", "SU/h", "total SU"]
    if balance is not None:
        headers.append("fits balance")
        for cells, r in zip(body, rows):
            cells.append("yes" if r.get("fits_balance") else "NO")
    head = f"{gpus} GPU(s) for {format_slurm(time_s)}"
    text = head + "\n" + table(headers, body, {1, 2, 3, 4})
    if balance is not None:
        fit = sum(1 for r in rows if r.get("fits_balance"))
        text += (f"\n\nAccount {balance['account']} | {format_su(balance['available_su'])} SUs remaining"
                 f" ({fit} of {len(rows)} type(s) fit)")
    return text


def su_chart(rows: list[dict[str, Any]], width: int) -> str:
    """A horizontal bar chart of total SU per GPU type (plotext, ANSI colours; one fixed colour
    per type, the dashboard's), or "" when there is nothing to draw."""
    import plotext

    from rv_tui.tui.colours import colour_of, rgb

    top = max((float(r["total_su"]) for r in rows if not r["free"]), default=0.0)
    if top <= 0 or width < 40:
        return ""
    n = len(rows)
    types = [r["gpu_type"] for r in rows]
    plotext.terminal.limit(False, False)  # else plotext clamps to what it detects (80 columns)
    fig = plotext.figure
    fig.clear()
    fig.theme("simple")
    fig.plot_size(width, n + 3)
    for i, r in enumerate(rows):
        y = n - 1 - i  # cheapest on top, as in the table
        if r["free"] or not r["total_su"]:
            continue
        sig = fig.signal([0, float(r["total_su"])], [y, y],
                         marker=plotext.marker("█", rgb(colour_of(r["gpu_type"], types))))
        sig.lines()
        fig.draw(sig)
    fig.ruler(1).lim(-0.5 if n == 1 else 0, 0.5 if n == 1 else n - 1)
    fig.ruler(1).ticks(list(range(n)), [f"{r['gpu_type']} " + ("free" if r["free"] else
                                                                f"{r['total_su']:,.0f} SU")
                                        for r in reversed(rows)])
    fig.ruler(0).lim(0, top)
    fig.ruler(0).ticks([0, top / 2, top], ["0", f"{top / 2:,.0f}", f"{top:,.0f} SU"])
    fig.legend(active=False)
    text = fig.build().string().rstrip("\n")
    fig.clear()
    return text


def apply_config_defaults(args: argparse.Namespace, config: Any) -> tuple[str, str | None, str | None]:
    """(walltime, GPU type, partition) for the estimate: the flag when given, else the config's
    ``defaults.time`` / ``defaults.gpu_type`` (``any`` = none) / ``defaults.partition``.  The
    partition only narrows the listing when no type is chosen (``--type`` wins, as in rv run)."""
    from rv_tui.allocator.plan import DEFAULT_TIME

    d = getattr(config, "defaults", None)
    time_text = args.time or (d.time if d is not None and d.time else DEFAULT_TIME)
    gpu_type = args.type
    if gpu_type in (None, "") and d is not None and d.gpu_type not in (None, "", "any"):
        gpu_type = d.gpu_type
    partition = d.partition if d is not None and not gpu_type else None
    return time_text, gpu_type, partition


def _config_or_none(args: argparse.Namespace) -> Any:
    from rv_tui.cli.common import load

    try:
        return load(args)
    except Exception:  # noqa: BLE001 - cost works without a (valid) config; fetch_balance says why
        return None


def _served(rows: list[dict[str, Any]], partition: str | None) -> list[dict[str, Any]]:
    from rv_tui.allocator.plan import _partition_serves

    if not partition:
        return rows
    kept = [r for r in rows if _partition_serves(partition, r["gpu_type"])]
    return kept or rows  # a partition rv does not know (or serving none of them): show all


async def main(args: argparse.Namespace) -> int:
    time_text, gpu_type, partition = apply_config_defaults(args, _config_or_none(args))
    try:
        time_s = parse_duration(time_text)
    except RvError as exc:
        raise RvError(f"--time: {exc.message}", hint=exc.hint) from None
    rows = _served(cost_rows(args.gpu, time_s, gpu_type), partition)
    balance, why = await fetch_balance(args)
    rows = with_balance(rows, balance)
    if args.json:
        from rv_tui.cli.common import print_json

        print_json({"gpus": args.gpu, "time_s": time_s, "types": rows, "balance": balance,
                    "balance_error": why})
    else:
        print(render(rows, args.gpu, time_s, balance))
        if sys.stdout.isatty():  # a picture for people; pipes and scripts get the table only
            import shutil

            chart = su_chart(rows, min(shutil.get_terminal_size((100, 24)).columns, 120))
            if chart:
                print("\n" + chart)
        if why:
            print(f"rv: note: SU balance not shown: {why}", file=sys.stderr)
    return 0
