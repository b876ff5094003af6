"""Text rendering of an :class:`~rv_tui.allocator.plan.AllocationPlan` (``rv up/run --dry-run``).

Plain text (no Rich/Textual) so it works in pipes and tests can read it; the TUI has its own view.
"""

from __future__ import annotations

from rv_tui.allocator.plan import AllocationPlan
from rv_tui.allocator.probe import describe_window
from rv_tui.durations import format_human, format_slurm
from rv_tui.gpus import GPU_SPECS


def table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def render_availability(plan: AllocationPlan) -> str:
    rows = []
    for a in plan.snapshot.availability():
        q = plan.snapshot.queues.get(a.partition)
        rows.append([a.gpu_type, a.partition, f"{a.gpus_free}/{a.gpus_total}",
                     str(a.max_free_on_one_node), str(q.pending_jobs if q else 0)])
    return table(["type", "partition", "free/total", "best node", "pending"], rows, {2, 3, 4})


def sharing_notes(plan: AllocationPlan) -> list[tuple[str, str]]:
    """One ``(type, "also reachable via gpu (same nodes)")`` per type with strategies, instead of
    repeating it on every strategy of that type."""
    shown = {s.gpu_type for s in plan.strategies}
    seen: dict[str, set[str]] = {}
    for w in plan.windows:
        if w.gpu_type in shown and w.partitions_sharing:
            seen.setdefault(w.gpu_type, set()).update(
                f"{p} (same nodes as {w.partition})" for p in w.partitions_sharing)
    return [(t, f"also reachable via {', '.join(sorted(v))}") for t, v in seen.items()]


def render_plan(plan: AllocationPlan) -> str:
    """Probe summary, windows, the ranked strategy table, pruned and excluded lists."""
    r = plan.request
    out = [
        f"request: {r.gpus} x {r.gpu_type or 'any'} for {format_slurm(r.time_s)}"
        + (f", mem {r.mem}" if r.mem else "") + (" (single node)" if r.single_node else "")
        + (f", partition {r.partition}" if r.partition else ""),
        f"cluster time {plan.snapshot.taken_at.isoformat(timespec='seconds')}; "
        f"{plan.stats.probes} probes in {plan.stats.round_trips} round trips "
        f"({plan.stats.seconds:.2f}s)",
        "",
        "GPU availability:",
        render_availability(plan),
        "",
        "backfill windows (longest walltime that starts now):",
    ]
    out += [f"  {describe_window(w)}" for w in plan.windows]
    out += ["", f"strategies ({len(plan.strategies)}, best first):"]
    rows = []
    for i, s in enumerate(plan.strategies, 1):
        rate = GPU_SPECS[s.gpu_type].su_per_gpu_hour
        rows.append([
            str(i), s.id, s.partition, s.topology, s.kind.value, format_slurm(s.walltime_s),
            format_slurm(s.time_min_s) if s.time_min_s else "-",
            format_human(s.est_wait_s), "free" if rate == 0 else f"{s.est_su:,.0f}", s.label,
        ])
    out.append(table(["#", "id", "partition", "nodes", "kind", "walltime", "time-min", "wait",
                      "SU", "label"], rows, {0, 7, 8}))
    notes = [(s.id, n) for s in plan.strategies for n in s.notes]
    sharing = sharing_notes(plan)
    if notes or sharing:
        out += ["", "notes:"] + [f"  {t}: {n}" for t, n in sharing] \
            + [f"  {sid}: {n}" for sid, n in notes]
    if plan.pruned:
        out += ["", "pruned:"] + [f"  {p.strategy.id}: {p.reason}" for p in plan.pruned]
    if plan.excluded:
        out += ["", "excluded types:"] + [f"  {t}: {why}" for t, why in plan.excluded.items()]
    return "\n".join(out)
