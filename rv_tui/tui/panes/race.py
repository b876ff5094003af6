"""Race: one lane per strategy, the winner lit up the moment it runs, losers struck out.

The race engine (:mod:`rv_tui.allocator.race`) yields events; the app forwards them here as
:class:`RaceEventArrived`.  This pane only keeps per-lane state and a timeline and draws them.
Times shown come from the app clock so snapshot tests (frozen clock) are deterministic.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from rv_tui.durations import format_human
from rv_tui.tui.state import AppState


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
    started_clock: float | None = None
    ended_clock: float | None = None
    winner: bool = False
    error: str = ""
    nodes: tuple[str, ...] = field(default_factory=tuple)


_GLYPH = {"SUBMITTING": "…", "PENDING": "◌", "STARTED": "▶", "RUNNING": "▶", "WINNER": "★",
          "CANCELLED": "✗", "FAILED": "✗", "REFUSED": "✗"}


def _offset(seconds: float) -> str:
    """``+4.2s``, ``+44m00s``, ``+1h02m``: time since the launch, compact and fixed-ish width."""
    s = max(0.0, seconds)
    if s < 60:
        return f"+{s:.1f}s"
    if s < 3600:
        return f"+{int(s // 60)}m{int(s % 60):02d}s"
    return f"+{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class RacePane(Vertical):
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
        self.outcome: str = ""
        self.winner_id: str | None = None
        self.notes: list[tuple[float, str]] = []  # launch preparation (sync, deps, snapshot)

    def compose(self) -> ComposeResult:
        yield Static("No race yet: fill the Launch form (3) and press ctrl+l.", id="race-title",
                     classes="pane-title")
        with VerticalScroll(id="race-lanes", can_focus=True):
            yield Static("", id="race-board")
        yield Static("Timeline", classes="section-title")
        with VerticalScroll(id="race-timeline"):
            yield Static("", id="race-events")

    def _clock(self) -> float:
        return getattr(self.app, "clock", time.time)()

    # ------------------------------------------------------------------ state
    def preparing(self) -> None:
        """A launch was confirmed: the workspace is being prepared before anything is submitted."""
        self.lanes, self.by_job, self.timeline, self.notes = [], {}, [], []
        self.outcome, self.winner_id, self.group_id = "preparing", None, None
        self.started_clock = self._clock()
        self.query_one("#race-title", Static).update(Text.assemble(
            ("PREPARING ", "bold reverse yellow"), " syncing the workspace, then submitting…"))
        self.query_one("#race-board", Static).update("")
        self.query_one("#race-events", Static).update("")

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
            self.outcome = "launch failed"
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
        self.outcome = "racing"
        self.winner_id = None
        self._add_event("start", f"racing {len(self.lanes)} strategies")
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

    def _add_event(self, kind: str, text: str) -> None:
        self.timeline.append((self._clock(), kind, text))

    def apply(self, event: Any) -> None:
        kind = str(getattr(event.kind, "value", event.kind))
        lane = self._lane_for(event)
        now = self._clock()
        if lane is not None:
            if kind == "submitted":
                lane.state = "PENDING"
            elif kind == "submit_failed":
                lane.state, lane.error = "REFUSED", event.message
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
                self.outcome = "won"
                for other in self.lanes:  # the engine cancels every loser before WINNER
                    if other is not lane and other.state in ("SUBMITTING", "PENDING", "STARTED"):
                        other.state, other.ended_clock = "CANCELLED", now
            elif kind == "cancelled":
                if not lane.winner:
                    lane.state, lane.ended_clock = "CANCELLED", now
            elif kind == "failed":
                cancelled = "cancel" in (event.message or "").lower()
                lane.state = "CANCELLED" if cancelled else "FAILED"
                lane.ended_clock = now
                if not cancelled:  # a cancelled loser keeps its last "why pending" in the table
                    lane.error = event.message
                else:
                    kind = "cancelled"
        if kind in ("no_winner", "timeout"):
            self.outcome = kind.replace("_", " ")
        text = event.describe() if hasattr(event, "describe") else str(event)
        # the engine's own client-side "after 1.2s": the timeline already stamps each event
        text = re.sub(r" after \d+(?:\.\d+)?s$", "", text)
        self._add_event(kind, text)
        self.redraw()

    def refresh_from(self, state: AppState) -> None:
        """Poll results can update elapsed times of the lanes' jobs."""
        if self.lanes:
            self.redraw()

    # ------------------------------------------------------------------ drawing
    def redraw(self) -> None:
        title = self.query_one("#race-title", Static)
        if not self.lanes:
            return
        now = self._clock()
        elapsed = format_human(now - (self.started_clock or now))
        if self.outcome == "won":
            winner = self.by_job.get(self.winner_id or "")
            title.update(Text.assemble(("★ WINNER ", "bold reverse green"), " ",
                                       (winner.label if winner else "", "bold"),
                                       (f"  job {self.winner_id}", "bold"),
                                       (f"   after {elapsed} · l: its logs", "dim")))
        elif self.outcome == "racing":
            live = sum(1 for ln in self.lanes if ln.state in ("PENDING", "SUBMITTING", "STARTED"))
            title.update(Text.assemble(("RACING ", "bold reverse yellow"),
                                       f" {live}/{len(self.lanes)} strategies in the race · {elapsed}",
                                       ("   x abort", "dim")))
        else:
            title.update(Text.assemble((f" {self.outcome.upper()} ", "bold reverse red"),
                                       f"  no strategy won · {elapsed}"))
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
            running = ""
            if lane.started_clock is not None and lane.ended_clock is None:
                running = format_human(now - lane.started_clock)
            where = ", ".join(lane.nodes) if lane.nodes else (lane.error or lane.reason)
            table.add_row(
                Text(_GLYPH.get(lane.state, "?"), style=state_style), Text(lane.label),
                lane.job_id or "–", Text(lane.state.lower(), style=state_style), where,
                f"{lane.eta:%H:%M:%S}" if lane.eta else "",
                format_human(lane.est_wait_s) if lane.est_wait_s is not None else "",
                "free" if lane.est_su == 0 else (f"{lane.est_su:.0f}" if lane.est_su is not None else ""),
                running, style=style)
        self.query_one("#race-board", Static).update(table)
        events = Text()
        colours = {"winner": "bold green", "cancelled": "dim", "failed": "red",
                   "submit_failed": "red", "started": "cyan", "no_winner": "bold red",
                   "timeout": "bold red", "start": "bold"}
        t0 = self.started_clock or now
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
        self.app.abort_race()
