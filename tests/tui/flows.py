"""User flows shared by the demo and the real-cluster Pilot tests.

Each flow drives the app only through keys (and reads app state / widgets to assert), so the
same code proves the TUI against the simulated cluster and the local Slurm cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from rv_tui.tui.app import RvApp
from rv_tui.tui.panes.env import EnvPane
from rv_tui.tui.panes.jobs import JobsPane
from rv_tui.tui.panes.launch import LaunchPane
from rv_tui.tui.panes.logs import LogsPane
from rv_tui.tui.panes.race import RacePane
from rv_tui.tui.widgets.logview import LogView


async def wait_for(pilot: Pilot, cond: Callable[[], Any], what: str, timeout: float = 60.0,
                   tick: Callable[[], None] | None = None) -> Any:
    """Poll ``cond`` (pausing the pilot) until truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if tick is not None:
            tick()
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def type_into(pilot: Pilot, selector: str, text: str) -> None:
    widget = pilot.app.query_one(selector, Input)
    widget.focus()
    widget.value = ""
    await pilot.pause()
    await pilot.press(*[c if c != " " else "space" for c in text])


async def launch_race(pilot: Pilot, command: str, *, tick=None, timeout: float = 90.0) -> str:
    """Fill the launch form, preview, confirm; wait for the winner; return its job id."""
    app: RvApp = pilot.app  # type: ignore[assignment]
    await pilot.press("3")
    await type_into(pilot, "#launch-command", command)
    await pilot.press("ctrl+t")
    launch = app.query_one(LaunchPane)
    await wait_for(pilot, lambda: launch.plan is not None, "the dry-run plan", timeout, tick)
    assert launch.plan.strategies, "the plan has no strategy"
    assert app.query_one("#launch-plan", DataTable).row_count == len(launch.plan.strategies)
    await pilot.press("ctrl+l")
    await pilot.pause()
    await pilot.press("y")
    race = app.query_one(RacePane)
    await wait_for(pilot, lambda: race.winner_id, "the race winner", timeout, tick)
    assert app.query_one("#tabs").active == "race"
    return race.winner_id


def race_losers_cancelled(app: RvApp) -> tuple[int, list[str]]:
    race = app.query_one(RacePane)
    winners = [ln for ln in race.lanes if ln.winner]
    not_done = [ln.label for ln in race.lanes
                if not ln.winner and ln.state not in ("CANCELLED", "FAILED", "REFUSED")]
    return len(winners), not_done


async def open_winner_logs(pilot: Pilot, expect: str, *, tick=None, timeout: float = 90.0) -> LogView:
    app: RvApp = pilot.app  # type: ignore[assignment]
    await pilot.press("l")  # race pane: winner logs
    logs = app.query_one(LogsPane)
    assert app.query_one("#tabs").active == "logs"
    view = app.query_one(LogView)
    await wait_for(pilot, lambda: any(expect in e.text for e in view.entries),
                   f"log line containing {expect!r}", timeout, tick)
    assert logs.job_id == app.query_one(RacePane).winner_id
    return view


async def cancel_job(pilot: Pilot, job_id: str, *, tick=None, timeout: float = 60.0) -> None:
    app: RvApp = pilot.app  # type: ignore[assignment]
    await pilot.press("2")
    jobs = app.query_one(JobsPane)
    app.poller.poke()
    await wait_for(pilot, lambda: job_id in jobs.jobs, f"job {job_id} in the jobs pane", timeout, tick)
    table = app.query_one("#jobs-table", DataTable)
    table.move_cursor(row=table.get_row_index(job_id))
    await pilot.press("c")
    await pilot.pause()
    await pilot.press("y")

    def gone() -> bool:
        app.poller.poke()
        job = jobs.jobs.get(job_id)
        return job is None or job.is_terminal

    await wait_for(pilot, gone, f"job {job_id} cancelled", timeout, tick)


async def edit_env(pilot: Pilot, key: str, value: str, *, tick=None, timeout: float = 30.0) -> None:
    app: RvApp = pilot.app  # type: ignore[assignment]
    await pilot.press("6")
    env = app.query_one(EnvPane)
    await wait_for(pilot, lambda: env.loaded, "the env store", timeout, tick)
    app.query_one("#env-table").focus()
    await pilot.press("a")
    await pilot.pause()
    await pilot.press(*key, "enter")
    await pilot.pause()
    await pilot.press(*value, "enter")
    await wait_for(pilot, lambda: env.variables.get(key) == value, f"env {key} saved", timeout, tick)


async def edit_config(pilot: Pilot, key: str, value: str) -> str | None:
    """Edit ``key`` in the config pane; returns the refusal text if the prompt stayed open."""
    app: RvApp = pilot.app  # type: ignore[assignment]
    await pilot.press("7")
    table = app.query_one("#config-table", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(key))
    await pilot.press("enter")
    await pilot.pause()
    box = app.screen.query_one("#prompt-input", Input)
    box.value = value
    await pilot.press("enter")
    await pilot.pause()
    if app.screen.query("#prompt-error"):
        err = str(app.screen.query_one("#prompt-error").render())
        await pilot.press("escape")
        await pilot.pause()
        return err
    return None


async def settle(pilot: Pilot, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await pilot.pause()
