"""Cluster availability: free/total GPUs per partition and type, queue depth, backfill, SU/hr.

The table answers "where can I get GPUs now?"; the chart under it answers "is it getting
better?" (free GPUs per type over this session, kept in :class:`AppState.history`).
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from rv_tui.durations import format_human
from rv_tui.gpus import GPU_SPECS
from rv_tui.tui.state import AppState, BackfillWindow
from rv_tui.tui.widgets.chart import HistoryChart


def _bar(free: int, total: int, width: int = 10) -> Text:
    if total <= 0:
        return Text("")
    filled = round(width * free / total)
    style = "bold green" if free / total >= 0.25 else ("yellow" if free else "red")
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")


def idle_nodes(snap: Any, gpu_type: str, partition: str) -> tuple[int, int]:
    """(idle, total) nodes of a type in a partition: idle means nothing at all allocated on it
    (a node with one GPU in use has GPUs free but is not idle)."""
    nodes = [n for n in snap.nodes if n.gpu_type == gpu_type and partition in n.partitions]
    idle = sum(1 for n in nodes if n.usable and n.gpus_used == 0 and not n.cpus_alloc
               and not n.memory_alloc_mb)
    return idle, len(nodes)


def window_text(window: BackfillWindow | None) -> str:
    """``1h 30m``, ``at least 2h 59m`` (the probe tried nothing longer), ``none`` or ``–``."""
    if window is None:
        return "–"
    if not window.seconds:
        return "none now"
    text = format_human(window.seconds)
    return f"at least {text}" if window.capped else text


class ClusterPane(Vertical):
    """Per (GPU type, partition) availability plus the free-GPU history chart.

    Queue depth and the backfill window belong to a partition, not a GPU type: they are shown on
    the partition's first row only.  "GPUs free" counts free GPUs on any node; "idle nodes"
    counts nodes with nothing allocated (what a whole-node job needs).

    The backfill column is ~24 ``sbatch --test-only`` probes (2 slurmctld RPCs each) a refresh:
    on a real cluster it is off until ``b`` turns it on (the demo shows it), and the summary
    says how old its figures are (the status bar says how old the rest is)."""

    BINDINGS = [Binding("b", "toggle_backfill", "Backfill column", show=False)]
    #: None: the default (on for the demo, off on a real cluster); ``b`` sets it
    show_backfill: bool | None = None

    def backfill_on(self) -> bool:
        """Whether the backfill column is shown (the poller probes only then)."""
        if self.show_backfill is None:
            return bool(getattr(self.app.cluster, "is_demo", False))
        return self.show_backfill

    def action_toggle_backfill(self) -> None:
        self.show_backfill = not self.backfill_on()
        if self.show_backfill:
            self.app.poller.poke()  # type: ignore[attr-defined]  # probe now, not in 60 s
        self.refresh_from(self.app.state)  # type: ignore[attr-defined]

    def _backfill_note(self) -> str:
        """``backfill off (b)`` / ``backfill 40s old (b)``; empty on the demo."""
        if getattr(self.app.cluster, "is_demo", False):
            return ""
        if not self.backfill_on():
            return "   backfill off (b shows it)"
        at = getattr(getattr(self.app, "poller", None), "windows_at", None)
        age = "probing…" if at is None else f"{format_human(max(0, int(time.time() - at)))} old"
        return f"   backfill {age} (b hides it)"

    def compose(self) -> ComposeResult:
        yield Static("", id="cluster-summary", classes="pane-title")
        table: DataTable = DataTable(id="cluster-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("partition", "type", "GPUs free", "", "idle nodes", "max free/node",
                          "queue run/pend", "pend GPUs", "backfill (1 GPU)", "SU/GPU-hr")
        yield table
        yield HistoryChart(id="cluster-chart")

    def refresh_from(self, state: AppState) -> None:
        snap = state.snapshot
        table = self.query_one("#cluster-table", DataTable)
        summary = self.query_one("#cluster-summary", Static)
        if snap is None:
            summary.update("waiting for the first poll…" if state.failures == 0
                           else f"no data yet: {state.last_error}")
            return
        totals = snap.free_by_type()
        free = sum(f for f, _ in totals.values())
        total = sum(t for _, t in totals.values())
        summary.update(Text.assemble(
            ("GPUs free ", "bold"), (f"{free}", "bold green" if free else "bold red"), f"/{total}",
            "   ", (" · ".join(f"{k} {f}/{t}" for k, (f, t) in sorted(totals.items())), "dim"),
            (self._backfill_note(), "dim")))
        backfill = self.backfill_on()
        cursor = table.cursor_row
        table.clear()
        seen: set[str] = set()
        for av in sorted(snap.availability(), key=lambda a: (a.partition, a.gpu_type)):
            queue = snap.queues.get(av.partition)
            spec = GPU_SPECS.get(av.gpu_type)
            su = "free" if spec and spec.free else (f"{spec.su_per_gpu_hour:.2f}" if spec else "?")
            first = av.partition not in seen
            seen.add(av.partition)
            free_style = "bold green" if av.gpus_free else "red"
            idle, nodes = idle_nodes(snap, av.gpu_type, av.partition)
            if first:
                part = Text(av.partition, style="bold")
                q_text = f"{queue.running_jobs}/{queue.pending_jobs}" if queue else "0/0"
                pend = str(queue.pending_gpus) if queue else "0"
                window = window_text(state.windows.get(av.partition)) if backfill else "b: show"
            else:  # the partition's queue and window are on its first row
                part, q_text, pend, window = Text("  ″", style="dim"), "", "", ""
            table.add_row(
                part,
                Text(av.gpu_type, style="bold"),
                Text(f"{av.gpus_free}/{av.gpus_total}", style=free_style, justify="right"),
                _bar(av.gpus_free, av.gpus_total),
                Text(f"{idle}/{nodes}", justify="right"),
                Text(str(av.max_free_on_one_node), justify="right"),
                Text(q_text, justify="right"),
                Text(pend, justify="right"),
                Text(window, justify="right"),
                Text(su, justify="right"),
                key=f"{av.gpu_type}@{av.partition}",
            )
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))
        self.query_one(HistoryChart).set_history(state.history)
