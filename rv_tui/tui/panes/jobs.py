"""Jobs: the user's jobs grouped by request (race group), with plain-language pending reasons.

Groups come from the local request store (:class:`rv_tui.jobs.store.GroupStore`); jobs not in
any group are listed under "other jobs".  Cancel takes the whole race group (the siblings),
because a lone pending sibling would otherwise win later and burn SUs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from rv_tui.cluster.base import JobInfo
from rv_tui.durations import format_human
from rv_tui.tui.state import AppState
from rv_tui.tui.widgets.dialogs import ConfirmScreen

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
}


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


class JobsPane(Vertical):
    BINDINGS = [
        Binding("l,enter", "logs", "Logs"),
        Binding("c", "cancel", "Cancel (+siblings)"),
        Binding("a", "attach", "Attach"),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.groups: dict[str, Any] = {}
        self.jobs: dict[str, JobInfo] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="jobs-title", classes="pane-title")
        table: DataTable = DataTable(id="jobs-table", cursor_type="row")
        for col in ("job", "name", "state", "partition", "GPUs", "why pending / where", "ETA",
                    "elapsed"):
            table.add_column(col, key=col)
        yield table

    def refresh_from(self, state: AppState) -> None:
        table = self.query_one("#jobs-table", DataTable)
        jobs = sorted(state.jobs, key=lambda j: j.job_id)
        self.jobs = {j.job_id: j for j in jobs}
        records = store_records()
        self.groups = group_index(jobs, records)
        now = state.snapshot.taken_at if state.snapshot else None
        selected = self.selected_job_id()
        table.clear()
        grouped: dict[str, list[JobInfo]] = {}
        titles: dict[str, str] = {}
        commands: dict[str, str] = {}  # shown in the wide column so the job column stays narrow
        for job in jobs:
            rec = self.groups.get(job.job_id)
            key = rec.id if rec else "_other"
            grouped.setdefault(key, []).append(job)
            if rec:
                titles[key] = f"▾ {rec.name}  [{rec.state}]"
                commands[key] = rec.command or ""
        order = [k for k in grouped if k != "_other"] + (["_other"] if "_other" in grouped else [])
        for key in order:
            title = titles.get(key, "▾ other jobs")
            table.add_row(Text(title, style="bold"), "", "", "", "",
                          Text(commands.get(key, ""), style="bold"), "", "", key=f"group:{key}")
            for job in grouped[key]:
                where = ", ".join(job.nodes) if job.nodes else reason_text(job.reason)
                table.add_row(
                    Text(f"  {job.job_id}"), job.name,
                    Text(job.state, style=STATE_STYLE.get(job.state, "")),
                    job.partition, job.gres.replace("gpu:", "") if job.gres else "",
                    Text(where, style="" if job.nodes else "italic"),
                    eta(job, now), format_human(job.elapsed_s) if job.elapsed_s else "",
                    key=job.job_id,
                )
        cluster_name = getattr(getattr(self.app, "cluster", None), "name", None)
        finished = [r for r in records if r.id not in grouped and r.winner
                    and (not r.cluster or r.cluster == cluster_name)][:RECENT_FINISHED]
        for rec in finished:
            table.add_row(Text(f"▸ {rec.name}  [finished]", style="bold dim"), "", "", "", "",
                          Text(rec.command or "", style="dim"), "", "", key=f"group:{rec.id}")
            self.groups.setdefault(rec.winner, rec)
            table.add_row(Text(f"  {rec.winner}", style="dim"), Text(rec.name, style="dim"),
                          Text("ENDED", style="blue"), "", "",
                          Text("left the queue · l: its output", style="dim italic"), "", "",
                          key=rec.winner)
        running = sum(1 for j in jobs if j.state == "RUNNING")
        pending = sum(1 for j in jobs if j.state == "PENDING")
        self.query_one("#jobs-title", Static).update(Text.assemble(
            ("Your jobs ", "bold"), (f"{running} running", "green"), " · ",
            (f"{pending} pending", "yellow"), ("   l logs · c cancel with siblings · a attach", "dim")))
        if selected and selected in self.jobs:
            table.move_cursor(row=table.get_row_index(selected))
        elif table.row_count > 1:
            table.move_cursor(row=1)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """enter on a row (the table's own binding) = logs."""
        event.stop()
        self.action_logs()

    def selected_job_id(self) -> str | None:
        table = self.query_one("#jobs-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key and key.startswith("group:"):
            gid = key[6:]
            ids = [jid for jid, rec in self.groups.items() if rec.id == gid and jid in self.jobs]
            return ids[0] if ids else None
        return key

    def siblings(self, job_id: str) -> list[str]:
        rec = self.groups.get(job_id)
        if rec is None:
            return [job_id]
        live = [jid for jid in rec.job_ids if jid in self.jobs and not self.jobs[jid].is_terminal]
        return sorted(set(live) | {job_id})

    def action_logs(self) -> None:
        job_id = self.selected_job_id()
        if job_id:
            self.app.open_logs(job_id)

    def action_cancel(self) -> None:
        job_id = self.selected_job_id()
        if not job_id:
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

        self.app.push_screen(ConfirmScreen(f"Cancel {len(ids)} job(s)?", body, yes="Cancel jobs",
                                           no="Keep"), done)

    def action_attach(self) -> None:
        job_id = self.selected_job_id()
        if not job_id:
            return
        job = self.jobs.get(job_id)
        if job is None or job.state != "RUNNING":
            self.app.notify("attach needs a running job", severity="warning")
            return
        self.app.attach(job)
