"""Jobs: the user's jobs grouped by request (race group), like k9s.

Groups come from the local request store (:class:`rv_tui.jobs.store.GroupStore`); jobs not in
any group are listed under "other jobs"; the last few finished requests follow, with the final
state and exit code the core reports (``cluster.jobs(ids)`` looks up jobs that left the queue).

k9s habits: the selection stays on the same job (by its key) across refreshes, even when rows
move; ``/`` filters as you type (Escape clears); the columns fit 120 cells with the command
truncated last, so ETA and elapsed stay visible; Enter shows everything about a job.  Cancel
takes the whole race group (a lone pending sibling would otherwise win later and burn SUs),
and its dialog defaults to "Keep".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from rv_tui.cluster.base import JobInfo
from rv_tui.durations import format_human, format_slurm
from rv_tui.tui.clock import cluster_time
from rv_tui.tui.keys import KeyGuard
from rv_tui.tui.state import AppState
from rv_tui.tui.widgets.dialogs import ConfirmScreen, TextScreen
from rv_tui.tui.words import plural

STATE_STYLE = {
    "RUNNING": "bold green",
    "PENDING": "yellow",
    "CONFIGURING": "cyan",
    "COMPLETING": "cyan",
    "COMPLETED": "blue",
    "CANCELLED": "dim",
    "FAILED": "bold red",
    "TIMEOUT": "red",
    "OUT_OF_MEMORY": "red",
    "NODE_FAIL": "red",
    "PREEMPTED": "red",
}
#: Short names so the state column stays narrow.
STATE_SHORT = {"OUT_OF_MEMORY": "OOM", "CONFIGURING": "CONFIG", "COMPLETING": "ENDING",
               "COMPLETED": "COMPLETED", "NODE_FAIL": "NODE_FAIL"}

#: (key, title, width) — fixed widths; the command column takes what is left (>= 8).
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("job", "job", 10),
    ("name", "name", 12),
    ("state", "state", 9),
    ("exit", "exit", 4),
    ("partition", "partition", 11),
    ("gpus", "GPUs", 9),
    ("elapsed", "elapsed", 7),
    ("eta", "ETA", 8),
    ("where", "why pending/where", 18),
)
#: DataTable pads each cell by one on both sides.
CELL_PAD = 2
MIN_COMMAND = 8


def reason_text(reason: str | None) -> str:
    try:
        from rv_tui.jobs.reasons import reason_text as _rt
    except ImportError:  # pragma: no cover - reasons.py is part of the core
        return reason or ""
    return _rt(reason)


def store_records() -> list[Any]:
    """Every request in the local store, newest first (empty if the store is unreadable)."""
    try:
        from rv_tui.jobs.store import GroupStore

        return sorted(GroupStore().all(), key=lambda r: r.created_at, reverse=True)
    except Exception:  # noqa: BLE001 - a broken store must not break the pane
        return []


def group_index(jobs: list[JobInfo], records: list[Any] | None = None) -> dict[str, Any]:
    """job id -> GroupRecord from the local store."""
    out: dict[str, Any] = {}
    for rec in records if records is not None else store_records():
        for jid in rec.job_ids:
            out.setdefault(jid, rec)
    return out


#: Finished requests (no job left in the queue) listed under the live ones.
RECENT_FINISHED = 3


def eta(job: JobInfo, now: datetime | None) -> str:
    if job.state != "PENDING" or job.start_time is None or now is None:
        return ""
    delta = (job.start_time - now).total_seconds()
    return "now" if delta <= 0 else f"~{format_human(delta)}"


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, with an ellipsis when cut."""
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def gpus_text(job: JobInfo) -> str:
    g = job.gres.replace("gpu:", "") if job.gres else ""
    return f"{job.num_nodes}×{g}" if g and job.num_nodes > 1 else g


def exit_text(job: JobInfo | None) -> Text:
    if job is None or job.exit_code is None or not job.is_terminal:
        return Text("")
    code = str(job.exit_code) + (f":{job.exit_signal}" if job.exit_signal else "")
    return Text(code, style="green" if job.exit_code == 0 and not job.exit_signal else "bold red")


class JobsPane(KeyGuard, Vertical):
    BINDINGS = [
        Binding("enter", "details", "Details"),
        Binding("l", "logs", "Logs"),
        Binding("c", "cancel", "Cancel (+siblings)"),
        Binding("a", "attach", "Attach"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.groups: dict[str, Any] = {}
        self.jobs: dict[str, JobInfo] = {}  # live jobs (the queue) and finished ones shown
        self.filter_text = ""
        self._rows: list[tuple[str, tuple[Any, ...]]] = []  # (key, cells) as last drawn
        self._state: AppState | None = None
        self._command_width = 40

    def compose(self) -> ComposeResult:
        yield Static("", id="jobs-title", classes="pane-title")
        table: DataTable = DataTable(id="jobs-table", cursor_type="row")
        for key, title, width in COLUMNS:
            table.add_column(title, key=key, width=width)
        table.add_column("command", key="command", width=self._command_width)
        yield table
        box = Input(placeholder="filter: job id, name, state, partition, node or command "
                                "(enter: keep · esc: clear)", id="jobs-filter")
        box.display = False
        yield box

    # ------------------------------------------------------------------ layout
    def on_resize(self) -> None:
        fixed = sum(w + CELL_PAD for _k, _t, w in COLUMNS) + CELL_PAD + 2  # + scrollbar
        width = max(MIN_COMMAND, self.size.width - fixed)
        if width != self._command_width:
            self._command_width = width
            table = self.query_one("#jobs-table", DataTable)
            col = table.columns.get("command")  # type: ignore[call-overload]
            if col is not None:
                col.width = width
                col.auto_width = False
            self._rows = []  # commands are cut to the width: draw again
            if self._state is not None:
                self.refresh_from(self._state)

    # ------------------------------------------------------------------ rows
    def _job_row(self, job: JobInfo, now: datetime | None, dim: bool = False) -> tuple[Any, ...]:
        where = ", ".join(job.nodes) if job.nodes and not job.is_terminal else (
            reason_text(job.reason) if job.state == "PENDING" else "")
        state = STATE_SHORT.get(job.state, job.state)
        style = "dim" if dim else ""
        return (
            Text(f"  {job.job_id}", style=style), Text(cut(job.name, 12), style=style),
            Text(state, style=STATE_STYLE.get(job.state, "")), exit_text(job),
            Text(cut(job.partition, 11), style=style), Text(cut(gpus_text(job), 9), style=style),
            Text(format_human(job.elapsed_s) if job.elapsed_s else "", justify="right", style=style),
            Text(eta(job, now), justify="right"),
            Text(cut(where, 18), style="italic" if job.state == "PENDING" else style), Text(""),
        )

    def _matches(self, job: JobInfo | None, rec: Any) -> bool:
        if not self.filter_text:
            return True
        needle = self.filter_text.lower()
        hay = []
        if job is not None:
            hay += [job.job_id, job.name, job.state, job.partition, job.gres, " ".join(job.nodes),
                    job.reason or ""]
        if rec is not None:
            hay += [rec.name, rec.command or "", rec.id]
        return any(needle in h.lower() for h in hay)

    def build_rows(self, state: AppState) -> list[tuple[str, tuple[Any, ...]]]:
        """(row key, cells) for the table: live groups, other jobs, recent finished requests."""
        jobs = sorted(state.jobs, key=lambda j: j.job_id)
        live = {j.job_id: j for j in jobs}
        records = store_records()
        self.groups = group_index(jobs, records)
        now = state.snapshot.taken_at if state.snapshot else None
        width = self._command_width
        grouped: dict[str, list[JobInfo]] = {}
        recs: dict[str, Any] = {}
        for job in jobs:
            rec = self.groups.get(job.job_id)
            key = rec.id if rec else "_other"
            if not self._matches(job, rec):
                continue
            grouped.setdefault(key, []).append(job)
            if rec:
                recs[key] = rec
        rows: list[tuple[str, tuple[Any, ...]]] = []
        order = [k for k in grouped if k != "_other"] + (["_other"] if "_other" in grouped else [])
        for key in order:
            rec = recs.get(key)
            name = rec.name if rec else "other jobs"
            rows.append((f"group:{key}", (
                Text("▾", style="bold"), Text(cut(name, 12), style="bold"),
                Text(rec.state if rec else "", style="bold"), "", "", "", "", "", "",
                Text(cut(rec.command or "" if rec else "", width), style="bold"))))
            for job in grouped[key]:
                rows.append((job.job_id, self._job_row(job, now)))
        cluster_name = getattr(getattr(self.app, "cluster", None), "name", None)
        finished = [r for r in records if r.id not in grouped and r.winner
                    and r.winner not in live
                    and (not r.cluster or r.cluster == cluster_name)][:RECENT_FINISHED]
        shown = dict(live)
        lookup: list[str] = []
        for rec in finished:
            final = state.final.get(rec.winner)
            if not self._matches(final, rec):
                continue
            self.groups.setdefault(rec.winner, rec)
            rows.append((f"group:{rec.id}", (
                Text("▸", style="bold dim"), Text(cut(rec.name, 12), style="bold dim"),
                Text("finished", style="dim"), "", "", "", "", "", "",
                Text(cut(rec.command or "", width), style="dim"))))
            if final is not None:
                shown[rec.winner] = final
                rows.append((rec.winner, self._job_row(final, now, dim=True)))
            else:
                lookup.append(rec.winner)
                rows.append((rec.winner, (
                    Text(f"  {rec.winner}", style="dim"), Text(cut(rec.name, 12), style="dim"),
                    Text("ENDED", style="blue"), "", "", "", "", "",
                    Text("left the queue", style="dim italic"), "")))
        self.jobs = shown
        if lookup:
            ask = getattr(self.app, "lookup_final_states", None)
            if callable(ask):
                ask(lookup)
        return rows

    def refresh_from(self, state: AppState) -> None:
        """Redraw when something changed, keeping the cursor on the same row *key*."""
        self._state = state
        table = self.query_one("#jobs-table", DataTable)
        rows = self.build_rows(state)
        running = sum(1 for j in state.jobs if j.state == "RUNNING")
        pending = sum(1 for j in state.jobs if j.state == "PENDING")
        title = Text.assemble(("Your jobs ", "bold"), (f"{running} running", "green"), " · ",
                              (f"{pending} pending", "yellow"))
        if self.filter_text:
            title.append(f"   filter /{self.filter_text}", style="bold magenta")
        title.append("   enter details · l logs · c cancel with siblings · a attach · / filter",
                     style="dim")
        self.query_one("#jobs-title", Static).update(title)
        if [(k, tuple(str(c) for c in cells)) for k, cells in rows] == \
                [(k, tuple(str(c) for c in cells)) for k, cells in self._rows]:
            return  # nothing changed: leave the table (and the cursor) alone
        selected = self._cursor_key(table)
        index = table.cursor_row
        self._rows = rows
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if not table.row_count:
            return
        keys = [k for k, _ in rows]
        if selected in keys:
            table.move_cursor(row=keys.index(selected), animate=False)
        elif selected is None:  # first draw: the first job, not its group header
            table.move_cursor(row=1 if len(keys) > 1 else 0, animate=False)
        else:  # the selected row is gone: stay where the cursor was
            table.move_cursor(row=min(index, table.row_count - 1), animate=False)

    @staticmethod
    def _cursor_key(table: DataTable) -> str | None:
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor out of range while rows change
            return None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """enter on a row (the table's own binding) = details."""
        event.stop()
        self.action_details()

    def selected_key(self) -> str | None:
        return self._cursor_key(self.query_one("#jobs-table", DataTable))

    def selected_job_id(self) -> str | None:
        key = self.selected_key()
        if key and key.startswith("group:"):
            gid = key[6:]
            ids = [jid for jid, rec in self.groups.items() if rec.id == gid and jid in self.jobs]
            return sorted(ids)[0] if ids else None
        return key

    def siblings(self, job_id: str) -> list[str]:
        rec = self.groups.get(job_id)
        if rec is None:
            return [job_id]
        live = [jid for jid in rec.job_ids if jid in self.jobs and not self.jobs[jid].is_terminal]
        return sorted(set(live) | {job_id})

    # ------------------------------------------------------------------ filter
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":  # else Escape falls through to the app's normal mode
            return bool(self.filter_text) or self.query_one("#jobs-filter", Input).display
        return super().check_action(action, parameters)

    def action_filter(self) -> None:
        box = self.query_one("#jobs-filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "jobs-filter":
            return
        event.stop()
        self.filter_text = event.value.strip()
        if self._state is not None:
            self.refresh_from(self._state)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "jobs-filter":
            return
        event.stop()
        if not self.filter_text:
            event.input.display = False
        self.query_one("#jobs-table", DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#jobs-filter", Input)
        box.value = ""
        box.display = False
        self.filter_text = ""
        self.query_one("#jobs-table", DataTable).focus()
        if self._state is not None:
            self.refresh_from(self._state)

    # ------------------------------------------------------------------ actions
    def action_details(self) -> None:
        job_id = self.selected_job_id()
        job = self.jobs.get(job_id or "")
        rec = self.groups.get(job_id or "")
        if job_id is None:
            return
        now = self._state.snapshot.taken_at if self._state and self._state.snapshot else None
        lines = [f"job        {job_id}"]
        if job is not None:
            state = job.state + (f" (exit {job.exit_code}"
                                 + (f", signal {job.exit_signal}" if job.exit_signal else "") + ")"
                                 if job.exit_code is not None and job.is_terminal else "")
            lines += [
                f"name       {job.name}",
                f"state      {state}",
                f"partition  {job.partition}",
                f"GPUs       {job.num_nodes} node(s) × {job.gres or '–'}",
                f"nodes      {', '.join(job.nodes) or '–'}",
            ]
            if job.state == "PENDING":
                lines.append(f"why        {reason_text(job.reason) or job.reason or '–'}")
            if job.submit_time:
                lines.append(f"submitted  {cluster_time(job.submit_time, now)}")
            if job.start_time:
                label = "est. start" if job.state == "PENDING" else "started"
                lines.append(f"{label:<10} {cluster_time(job.start_time, now)}")
            lines.append(f"elapsed    {format_human(job.elapsed_s) if job.elapsed_s else '–'}"
                         + (f" of {format_slurm(job.time_limit_s)}" if job.time_limit_s else ""))
            if getattr(job, "restart_count", 0):
                lines.append(f"restarts   {job.restart_count} (requeued by Slurm)")
            if getattr(job, "work_dir", None):
                lines.append(f"work dir   {job.work_dir}")
            if getattr(job, "from_accounting", False):
                lines.append("record     final, from the accounting database (sacct)")
            if job.stdout_path:
                lines.append(f"stdout     {job.stdout_path}")
            if job.stderr_path:
                lines.append(f"stderr     {job.stderr_path}")
        else:
            lines.append("state      left the queue (final state unknown)")
        if rec is not None:
            lines += ["", f"request    {rec.name}  [{rec.state}]  group {rec.id}",
                      f"command    {rec.command or '(interactive)'}",
                      f"strategies {', '.join(rec.job_ids)}"
                      + (f"  (winner {rec.winner})" if rec.winner else "")]
        self.app.push_screen(TextScreen(f"job {job_id}", "\n".join(lines)))

    def action_logs(self) -> None:
        job_id = self.selected_job_id()
        if job_id:
            self.app.open_logs(job_id)

    def action_cancel(self) -> None:
        job_id = self.selected_job_id()
        if not job_id:
            return
        job = self.jobs.get(job_id)
        if job is None or job.is_terminal:
            self.app.notify(f"job {job_id} has already ended", severity="warning")
            return
        ids = self.siblings(job_id)
        body = "Jobs: " + ", ".join(ids)
        if len(ids) > 1:
            body += "\n(the other strategies of the same request are cancelled too)"

        def done(ok: bool | None) -> None:
            if ok:
                from rv_tui.tui import workers

                self.app.start_worker(workers.cancel_jobs(self.app, self.app.cluster, ids),
                                      group="cancel", exclusive=False)

        self.app.push_screen(ConfirmScreen(f"Cancel {plural(len(ids), 'job')}?", body,
                                           yes="Cancel jobs", no="Keep"), done)

    def action_attach(self) -> None:
        job_id = self.selected_job_id()
        if not job_id:
            return
        job = self.jobs.get(job_id)
        if job is None or job.state != "RUNNING":
            self.app.notify("attach needs a running job", severity="warning")
            return
        self.app.attach(job)
