"""The always-visible top bar: cluster, connection state, last update and its age, demo banner."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from rv_tui.durations import format_human
from rv_tui.tui.clock import cluster_time
from rv_tui.tui.state import AppState

_CONN_STYLE = {
    "connected": ("●", "bold green"),
    "connecting": ("◌", "bold yellow"),
    "reconnecting": ("◌", "bold yellow"),
    "lost": ("✗", "bold red"),
}


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{format_human(seconds)} ago"


class StatusBar(Static):
    """``rv · rivanna (abc1de)   ● connected   updated 14:03:22 EST cluster time (3s ago)``."""

    def show(self, name: str, user: str, state: AppState, now: float) -> None:
        dot, style = _CONN_STYLE.get(state.connection, ("✗", "bold red"))
        conn = state.connection
        if state.connection == "reconnecting" and state.failures:
            conn = f"reconnecting (try {state.failures})"
        updated = "–"
        if state.snapshot is not None:  # the cluster's clock, in its zone, labelled
            updated = cluster_time(state.snapshot.taken_at) + " cluster time"
        age = state.age(now)
        stale = age is not None and age > 60
        text = Text.assemble(
            (" rv ", "bold reverse"), " ", (name, "bold"), (f" ({user})", "dim"), "   ",
            (f"{dot} {conn}", style), "   ",
            ("updated ", "dim"), (updated, "bold"), (f" ({_age(age)})", "bold red" if stale else "dim"),
        )
        if state.connection != "connected" and state.last_error:
            text.append(f"   {state.last_error}", style="red")
        self.update(text)


class DemoBanner(Static):
    """Shown whenever ``cluster.is_demo``: nobody should mistake the simulation for Rivanna."""

    def on_mount(self) -> None:
        self.update(Text(" DEMO — simulated cluster: nothing here runs on a real cluster ",
                         style="bold"))


class ReconnectBanner(Static):
    """Shown while the connection is down (the pool said so, or polls fail): panes keep their
    last data."""

    shown = 0  # how many times it was drawn (tests see a short outage this way)

    def show(self, state: AppState, now: float) -> None:
        self.shown += 1
        age = state.age(now)
        kept = f"showing data from {_age(age)}" if age is not None else "no data yet"
        head = ("⚠ connection lost — gave up reconnecting: " if state.connection == "lost"
                else "⚠ connection lost — reconnecting… ")
        self.update(Text.assemble((head, "bold"), (f"{kept}; {state.last_error or ''}", "")))
