"""Command log: the exact remote commands rv ran, with duration and exit status.

"What is rv doing on my cluster?" — lazygit's command panel for Slurm.  Records come from the
cluster's ``command_log`` (a :class:`rv_tui.remote.commandlog.CommandLog`; for clusters without
one the app records the Cluster calls, see :mod:`rv_tui.tui.recording`).  Commands are already
redacted by the log.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

#: Rows shown; the log itself is bounded too.
MAX_ROWS = 500


def _status(rec) -> Text:
    if rec.exit_status is None:
        return Text(rec.error or "–", style="bold red" if rec.error else "dim")
    if rec.exit_status == 0:
        return Text("0", style="green")
    return Text(str(rec.exit_status), style="bold red")


class CommandLogPane(Vertical):
    """A table of command records, newest at the bottom, following unless you scroll up."""

    def __init__(self, *args, time_format=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._count = 0
        self._time_format = time_format or (lambda t: time.strftime("%H:%M:%S", time.localtime(t)))

    def compose(self) -> ComposeResult:
        yield Static("Remote commands (redacted), newest last", id="commandlog-title",
                     classes="pane-title")
        table: DataTable = DataTable(id="commandlog-table", cursor_type="row", zebra_stripes=True)
        table.add_column("time", key="time")
        table.add_column("took", key="took")
        table.add_column("exit", key="exit")
        table.add_column("kind", key="kind")
        table.add_column("command", key="command")
        yield table

    def add_records(self, records) -> None:
        table = self.query_one("#commandlog-table", DataTable)
        follow = table.cursor_row >= table.row_count - 1
        for rec in records:
            self._count += 1
            command = rec.command.replace("\n", "⏎ ")
            if len(command) > 400:
                command = command[:400] + "…"
            table.add_row(self._time_format(rec.started_at), f"{rec.duration * 1000:.0f}ms",
                          _status(rec), getattr(rec, "kind", "run"), command,
                          key=f"c{self._count}")
        while table.row_count > MAX_ROWS:
            first = next(iter(table.rows))
            table.remove_row(first)
        if follow and table.row_count:
            table.move_cursor(row=table.row_count - 1)
        self.query_one("#commandlog-title", Static).update(
            f"Remote commands (redacted), newest last — {self._count} recorded")
