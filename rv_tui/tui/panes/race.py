"""Race: one lane per strategy, the winner lit up the moment it runs, losers struck out.

The race engine (:mod:`rv_tui.allocator.race`) yields events; the app forwards them here as
:class:`RaceEventArrived`.  This pane keeps per-lane state, a plotext timeline (one lane per
strategy: queued, started, cancelled, winner, the job's end) and an event log, and draws them.

After the win the race is over, so what the pane says is frozen there: the time to win is the
win's time, not "now"; the winner's running time and end come from the job's real state (the
polls, then a one-off lookup of the final state once it leaves the queue); abort is offered only
while racing.  Times come from the app clock so snapshot tests (frozen clock) are deterministic.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from rv_tui.durations import format_human
from rv_tui.tui.clock import cluster_time
from rv_tui.tui.keys import KeyGuard
from rv_tui.tui.state import AppState
from rv_tui.tui.widgets.chart import TimelineChart, TimelineLane
from rv_tui.tui.words import plural


@dataclass
class Lane:
    label: str
    kind: str = ""
    est_wait_s: float | None = None
    est_su: float | None = None
    job_id: str | None = None
    state: str = "SUBMITTING"
    reason: str = ""
    eta: Any = None
    submitted_clock: float | None = None
    started_clock: float | None = None
    ended_clock: float | None = None
    winner: bool = False
    error: str = ""
    nodes: tuple[str, ...] = field(default_factory=tuple)
    #: the job's state from the polls once it started (RUNNING, COMPLETED, …) and its elapsed
    job_state: str = ""
    job_elapsed_s: int | None = None
    exit_code: int | None = None
    seen_in_queue: bool = False


_GLYPH = {"SUBMITTING": "…", "PENDING": "◌", "STARTED": "▶", "RUNNING": "▶", "WINNER": "★",
          "CANCELLED": "✗", "FAILED": "✗", "REFUSED": "✗"}
_LIVE = ("SUBMITTING", "PENDING", "STARTED")


def _offset(seconds: float) -> str:
    """``+4.2s``, ``+44m00s``, ``+1h02m``: time since the launch, compact and fixed-ish width."""
    s = max(0.0, seconds)
    if s < 60:
        return f"+{s:.1f}s"
    if s < 3600:
        return f"+{int(s // 60)}m{int(s % 60):02d}s"
    return f"+{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _seconds(s: float) -> str:
    """A short duration that keeps tenths under a minute (a race is often won in seconds)."""
    return f"{s:.1f}s" if s < 60 else format_human(s)


class RacePane(KeyGuard, Vertical):
    BINDINGS = [
        Binding("l", "logs", "Winner logs"),
        Binding("x", "abort", "Abort race"),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lanes: list[Lane] = []
        self.by_job: dict[str, Lane] = {}
        self.timeline: list[tuple[float, str, str]] = []
        self.group_id: str | None = None
        self.started_clock: float | None = None
        self.won_clock: float | None = None
        self.outcome: str = ""
        self.winner_id: str | None = None
        self.notes: list[tuple[float, str]] = []  # launch preparation (sync, deps, snapshot)
        self.cluster_now: datetime | None = None  # the last snapshot's time (for "today")

    def compose(self) -> ComposeResult:
        yield Static("No race yet: fill the Launch form (3) and press ctrl+l.", id="race-title",
                     classes="pane-title")
        with VerticalScroll(id="race-lanes", can_focus=True):
            yield Static("", id="race-board")
        yield TimelineChart(id="race-chart")
        with VerticalScroll(id="race-timeline"):
            yield Static("", id="race-events")

    def _clock(self) -> float:
        return getattr(self.app, "clock", time.time)()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not super().check_action(action, parameters):
            return False
        if action == "abort":
            return self.outcome in ("racing", "preparing")  # nothing to abort after the race
        if action == "logs":
            return True if self.winner_id else None
        return True

    def _set_outcome(self, outcome: str) -> None:
        self.outcome = outcome
        self.refresh_bindings()

    # ------------------------------------------------------------------ state
    def preparing(self) -> None:
        """A launch was confirmed: the workspace is being prepared before anything is submitted."""
        self.lanes, self.by_job, self.timeline, self.notes = [], {}, [], []
        self.winner_id, self.group_id, self.won_clock = None, None, None
        self._set_outcome("preparing")
        self.started_clock = self._clock()
        self.query_one("#race-title", Static).update(Text.assemble(
            ("PREPARING ", "bold reverse yellow"), " syncing the workspace, then submitting…"))
        self.query_one("#race-board", Static).update("")
        self.query_one("#race-events", Static).update("")
        self.query_one(TimelineChart).set_lanes((), 0.0)

    def note(self, text: str) -> None:
        """A preparation step (``syncing …``, ``synced: …``); kept at the top of the timeline."""
        self.notes.append((self._clock(), text))
        if self.outcome == "preparing":
            self.query_one("#race-title", Static).update(Text.assemble(
                ("PREPARING ", "bold reverse yellow"), f" {text}"))
        else:
            self._add_event("note", text)
            self.redraw()

    def launch_failed(self) -> None:
        """Preparation failed before any job was submitted (the error is also a notification)."""
        if self.outcome == "preparing":
            self._set_outcome("launch failed")
            self.query_one("#race-title", Static).update(Text.assemble(
                (" LAUNCH FAILED ", "bold reverse red"), "  nothing was submitted; see the notification"))

    def start(self, group_id: str | None, strategies: list[Any]) -> None:
        self.lanes = [Lane(label=getattr(s, "label", str(s)), kind=str(getattr(s, "kind", "")),
                           est_wait_s=getattr(s, "est_wait_s", None),
                           est_su=getattr(s, "est_su", None)) for s in strategies]
        self.by_job = {}
        self.timeline = [(when, "note", text) for when, text in self.notes]
        self.group_id = group_id
        self.started_clock = self.started_clock if self.outcome == "preparing" else self._clock()
        self.winner_id, self.won_clock = None, None
        self._set_outcome("racing")
        self._add_event("start", f"racing {plural(len(self.lanes), 'strategy')}")
        self.redraw()

    def _lane_for(self, event: Any) -> Lane | None:
        if event.job_id and event.job_id in self.by_job:
            return self.by_job[event.job_id]
        label = getattr(event, "label", "")
        for lane in self.lanes:
            if lane.label == label and (lane.job_id is None or lane.job_id == event.job_id):
                if event.job_id:
                    lane.job_id = event.job_id
                    self.by_job[event.job_id] = lane
                return lane
        return None

    def _add_event(self, kind: str, text: str, when: float | None = None) -> None:
        self.timeline.append((self._clock() if when is None else when, kind, text))

    def apply(self, event: Any) -> None:
        kind = str(getattr(event.kind, "value", event.kind))
        lane = self._lane_for(event)
        now = self._clock()
        if lane is not None:
            if kind == "submitted":
                lane.state = "PENDING"
                lane.submitted_clock = lane.submitted_clock or now
            elif kind == "submit_failed":
                lane.state, lane.error = "REFUSED", event.message
                lane.submitted_clock = lane.submitted_clock or now
                lane.ended_clock = now
            elif kind == "pending":
                lane.state = "PENDING"
                lane.reason = event.reason_text or (event.reason or "")
                lane.eta = event.eta
            elif kind == "started":
                lane.state, lane.started_clock = "STARTED", now
            elif kind == "winner":
                lane.state, lane.winner = "WINNER", True
                lane.started_clock = lane.started_clock or now
                lane.nodes = tuple(event.info.nodes) if event.info else ()
                self.winner_id = event.job_id
                self.won_clock = now
                self._set_outcome("won")
                for other in self.lanes:  # the engine cancels every loser before WINNER
                    if other is not lane and other.state in _LIVE:
                        other.state, other.ended_clock = "CANCELLED", now
            elif kind == "cancelled":
                if lane.winner:  # cancelled after it won (abort, or someone's scancel)
                    lane.job_state, lane.ended_clock = "CANCELLED", lane.ended_clock or now
                else:
                    lane.state, lane.ended_clock = "CANCELLED", lane.ended_clock or now
            elif kind == "failed":
                cancelled = "cancel" in (event.message or "").lower()
                lane.state = "CANCELLED" if cancelled else "FAILED"
                lane.ended_clock = lane.ended_clock or now
                if not cancelled:  # a cancelled loser keeps its last "why pending" in the table
                    lane.error = event.message
                else:
                    kind = "cancelled"
        if kind in ("no_winner", "timeout"):
            self._set_outcome(kind.replace("_", " "))
            for other in self.lanes:
                if other.state in _LIVE:
                    other.ended_clock = other.ended_clock or now
        text = event.describe() if hasattr(event, "describe") else str(event)
        # the engine's own client-side "after 1.2s": the timeline already stamps each event
        text = re.sub(r" after \d+(?:\.\d+)?s$", "", text)
        eta = getattr(event, "eta", None)
        if eta is not None:  # one clock: the cluster's estimate says its zone (and the date)
            text = text.replace(f"est. start {eta:%H:%M:%S}",
                                f"est. start {cluster_time(eta, self.cluster_now)}")
        self._add_event(kind, text)
        self.redraw()

    def refresh_from(self, state: AppState) -> None:
        """A poll: the winner's (and started lanes') real job state, elapsed time and end."""
        if state.snapshot is not None:
            self.cluster_now = state.snapshot.taken_at
        if not self.lanes:
            return
        jobs = {j.job_id: j for j in state.jobs}
        now = self._clock()
        for lane in self.lanes:
            if not lane.job_id or not (lane.winner or lane.state == "STARTED"):
                continue
            job = jobs.get(lane.job_id)
            if job is not None:
                lane.seen_in_queue = True
                self.job_info(job, now)
            elif lane.winner and lane.ended_clock is None and lane.seen_in_queue:
                # it left the queue: ended; the app looks its final state up (job_info again)
                lane.job_state = lane.job_state if lane.job_state not in ("", "RUNNING") else "ENDED"
                lane.ended_clock = now
                self._add_event("ended", f"job {lane.job_id} left the queue")
                lookup = getattr(self.app, "lookup_final_states", None)
                if callable(lookup):
                    lookup([lane.job_id])
        self.redraw()

    def job_info(self, job: Any, now: float | None = None) -> None:
        """The real state of a lane's job (from a poll or a final-state lookup)."""
        lane = self.by_job.get(job.job_id)
        if lane is None:
            return
        now = self._clock() if now is None else now
        was = lane.job_state
        lane.job_state = job.state
        if job.elapsed_s:
            lane.job_elapsed_s = int(job.elapsed_s)
        if job.exit_code is not None:
            lane.exit_code = job.exit_code
        if job.is_terminal and (lane.ended_clock is None or was in ("", "RUNNING", "ENDED")):
            if lane.ended_clock is None:
                lane.ended_clock = now
            if was != job.state:
                code = f" (exit {job.exit_code})" if job.exit_code is not None else ""
                self._add_event("ended" if job.state == "COMPLETED" else "failed",
                                f"job {job.job_id} {job.state.lower()}{code}")

    # ------------------------------------------------------------------ drawing
    def _running_text(self, lane: Lane, now: float) -> str:
        if lane.started_clock is None:
            return ""
        if lane.job_elapsed_s is not None:  # the job's own elapsed time (squeue/scontrol)
            return format_human(lane.job_elapsed_s)
        end = lane.ended_clock if lane.ended_clock is not None else now
        return format_human(max(0.0, end - lane.started_clock))

    def _timeline_lanes(self, now: float) -> list[TimelineLane]:
        t0 = self.started_clock or now
        rel = (lambda v: None if v is None else max(0.0, v - t0))  # noqa: E731
        out = []
        for ln in self.lanes:
            if ln.winner:
                end = ln.job_state if ln.ended_clock is not None else ""
            else:
                end = {"CANCELLED": "cancelled", "FAILED": "failed",
                       "REFUSED": "refused"}.get(ln.state, "")
            out.append(TimelineLane(ln.label, rel(ln.submitted_clock), rel(ln.started_clock),
                                    rel(ln.ended_clock), end, ln.winner))
        return out

    def redraw(self) -> None:
        title = self.query_one("#race-title", Static)
        if not self.lanes:
            return
        now = self._clock()
        t0 = self.started_clock or now
        if self.outcome == "won":
            winner = self.by_job.get(self.winner_id or "")
            took = (self.won_clock or now) - t0
            status = ""
            if winner is not None and winner.job_state:
                status = winner.job_state.lower()
                if winner.exit_code is not None and winner.ended_clock is not None:
                    status += f" (exit {winner.exit_code})"
            title.update(Text.assemble(("★ WINNER ", "bold reverse green"), " ",
                                       (winner.label if winner else "", "bold"),
                                       (f"  job {self.winner_id}", "bold"),
                                       f"   won after {_seconds(took)}",
                                       (f" · now {status}" if status else "", "bold"),
                                       ("   l: its logs", "dim")))
        elif self.outcome == "racing":
            live = sum(1 for ln in self.lanes if ln.state in _LIVE)
            title.update(Text.assemble(("RACING ", "bold reverse yellow"),
                                       f" {live}/{plural(len(self.lanes), 'strategy')} in the race"
                                       f" · {_seconds(now - t0)}",
                                       ("   x abort", "dim")))
        else:
            ended = max((when for when, _k, _t in self.timeline), default=now)
            title.update(Text.assemble((f" {self.outcome.upper()} ", "bold reverse red"),
                                       f"  no strategy won · ended after {_seconds(ended - t0)}"))
        table = Table(expand=True, box=None, pad_edge=False, show_edge=False)
        for col, just in (("", "left"), ("strategy", "left"), ("job", "left"), ("state", "left"),
                          ("why pending / where", "left"), ("est. start", "left"),
                          ("est. wait", "right"), ("SU", "right"), ("running", "right")):
            table.add_column(col, justify=just, no_wrap=col != "why pending / where")
        for lane in self.lanes:
            style = ""
            if lane.winner:
                style = "bold green reverse"
            elif lane.state in ("CANCELLED", "FAILED", "REFUSED"):
                style = "dim strike"
            state_style = {"PENDING": "yellow", "STARTED": "cyan", "WINNER": "bold green",
                           "REFUSED": "red", "FAILED": "red"}.get(lane.state, "")
            state = lane.state.lower()
            if lane.winner and lane.job_state:
                state = f"won · {lane.job_state.lower()}"
            where = ", ".join(lane.nodes) if lane.nodes else (lane.error or lane.reason)
            eta = ""
            if lane.eta and lane.state in ("PENDING", "SUBMITTING"):
                eta = cluster_time(lane.eta, self.cluster_now, seconds=False)
            table.add_row(
                Text(_GLYPH.get(lane.state, "?"), style=state_style), Text(lane.label),
                lane.job_id or "–", Text(state, style=state_style), where, eta,
                format_human(lane.est_wait_s) if lane.est_wait_s is not None else "",
                "free" if lane.est_su == 0 else (f"{lane.est_su:.0f}" if lane.est_su is not None else ""),
                self._running_text(lane, now), style=style)
        self.query_one("#race-board", Static).update(table)
        self.query_one(TimelineChart).set_lanes(self._timeline_lanes(now), now - t0)
        events = Text()
        colours = {"winner": "bold green", "cancelled": "dim", "failed": "red",
                   "submit_failed": "red", "started": "cyan", "no_winner": "bold red",
                   "timeout": "bold red", "start": "bold", "ended": "bold blue"}
        for when, kind, text in self.timeline[-200:]:
            events.append(f"{_offset(when - t0):>8} ", style="dim")
            events.append(f"{text}\n", style=colours.get(kind, ""))
        self.query_one("#race-events", Static).update(events)
        self.query_one("#race-timeline", VerticalScroll).scroll_end(animate=False)

    # ------------------------------------------------------------------ actions
    def action_logs(self) -> None:
        if self.winner_id:
            self.app.open_logs(self.winner_id)
        else:
            self.app.notify("no winner yet", severity="warning")

    def action_abort(self) -> None:
        if self.outcome not in ("racing", "preparing"):
            self.app.notify(f"the race is over ({self.outcome}): nothing to abort", severity="warning")
            return
        self.app.abort_race()
