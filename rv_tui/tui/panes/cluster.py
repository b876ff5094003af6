"""Cluster availability: free/total GPUs per type and partition, queue depth, backfill, SU/hr.

The table answers "where can I get GPUs now?"; the chart under it answers "is it getting
better?" (free GPUs per type over this session, kept in :class:`AppState.history`).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from rv_tui.durations import format_human
from rv_tui.gpus import GPU_SPECS
from rv_tui.tui.state import AppState
from rv_tui.tui.widgets.chart import HistoryChart


def _bar(free: int, total: int, width: int = 10) -> Text:
    if total <= 0:
        return Text("")
    filled = round(width * free / total)
    style = "bold green" if free / total >= 0.25 else ("yellow" if free else "red")
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")


class ClusterPane(Vertical):
    """Per (GPU type, partition) availability plus the free-GPU history chart."""

    def compose(self) -> ComposeResult:
        yield Static("", id="cluster-summary", classes="pane-title")
        table: DataTable = DataTable(id="cluster-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("type", "partition", "free/total", "", "nodes free", "max/node",
                          "queue run/pend", "pend GPUs", "backfill", "SU/GPU-hr")
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
            "   ", (" · ".join(f"{k} {f}/{t}" for k, (f, t) in sorted(totals.items())), "dim")))
        cursor = table.cursor_row
        table.clear()
        for av in snap.availability():
            queue = snap.queues.get(av.partition)
            spec = GPU_SPECS.get(av.gpu_type)
            su = "free" if spec and spec.free else (f"{spec.su_per_gpu_hour:.2f}" if spec else "?")
            window = state.windows.get(av.partition)
            free_style = "bold green" if av.gpus_free else "red"
            table.add_row(
                Text(av.gpu_type, style="bold"),
                av.partition,
                Text(f"{av.gpus_free}/{av.gpus_total}", style=free_style, justify="right"),
                _bar(av.gpus_free, av.gpus_total),
                Text(f"{av.nodes_with_free}/{av.nodes_total}", justify="right"),
                Text(str(av.max_free_on_one_node), justify="right"),
                Text(f"{queue.running_jobs}/{queue.pending_jobs}" if queue else "0/0", justify="right"),
                Text(str(queue.pending_gpus) if queue else "0", justify="right"),
                Text(format_human(window) if window else "–", justify="right"),
                Text(su, justify="right"),
                key=f"{av.gpu_type}@{av.partition}",
            )
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))
        self.query_one(HistoryChart).set_history(state.history)
