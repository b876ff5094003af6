"""Pilot tests that press real keys only (no widget values set) against the demo cluster.

They prove what a keyboard user meets: the launch submits what the form says *now* (not an old
preview), normal mode (Escape, then digits/letters), a Jobs selection that follows its job
across refreshes that reorder the rows, and a Race pane frozen at the win.
"""

from __future__ import annotations

import html
from datetime import timedelta
from pathlib import Path

import pytest
from textual.widgets import Button, DataTable, Input

from rv_tui.cluster.base import JobInfo
from rv_tui.cluster.demo import DemoCluster
from rv_tui.tui import messages as m
from rv_tui.tui.app import RvApp
from rv_tui.tui.panes.jobs import JobsPane
from rv_tui.tui.panes.launch import LaunchPane
from rv_tui.tui.panes.race import RacePane
from rv_tui.tui.widgets.dialogs import ConfirmScreen

from rv_tui.durations import format_human
from rv_tui.durations import format_human as flows_format

from tests.tui import flows
from tests.tui.keys import focus_field, pick_option, replace_text, type_text

CONFIG = """\
[connection]
host = "rivanna"
user = "abc1de"

[defaults]
time = "4h"
gpu_type = "a40"
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "rv-home"
    h.mkdir()
    (h / "config.toml").write_text(CONFIG)
    monkeypatch.setenv("RV_HOME", str(h))
    return h


def make_app(home: Path, *, poll: float = 0.5) -> tuple[RvApp, DemoCluster]:
    cluster = DemoCluster(seed=7, speed=0)
    work = home.parent / "work"
    work.mkdir(exist_ok=True)
    return RvApp(cluster, config_path=home / "config.toml", poll_interval=poll, cwd=work), cluster


def submitted(cluster: DemoCluster, job_ids: list[str]) -> list:
    """What the (simulated) scheduler really received for these jobs."""
    return [cluster.sim.jobs[int(j)].submission for j in job_ids]


async def test_launch_submits_the_form_not_the_old_preview(home: Path) -> None:
    app, cluster = make_app(home)
    tick = lambda: cluster.advance(2)  # noqa: E731
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        await pilot.press("3")
        launch = app.query_one(LaunchPane)
        # the form starts from the config's defaults
        assert app.query_one("#launch-time", Input).value == "4h"
        assert app.query_one("#launch-type").value == "a40"
        # fill every field with keys
        assert app.focused.id == "launch-command"
        await type_text(pilot, "echo COMMAND-A")
        await pilot.press("tab")
        await replace_text(pilot, "2")
        await pilot.press("tab")
        await pick_option(pilot, "a6000")
        assert app.query_one("#launch-type").value == "a6000"
        await pilot.press("tab")
        await replace_text(pilot, "1h")
        await pilot.press("tab")
        await type_text(pilot, "32G")
        await pilot.press("tab")
        await type_text(pilot, "kbd-test")
        await pilot.press("tab", "space")  # single node only
        assert app.query_one("#launch-single").value is True
        await pilot.press("ctrl+t")
        await flows.wait_for(pilot, lambda: launch.plan is not None, "the preview", tick=tick)
        assert launch.request.gpus == 2 and launch.request.command == "echo COMMAND-A"
        # now change GPUs and the command: the preview is stale
        await focus_field(pilot, "launch-gpus")
        await replace_text(pilot, "1")
        await focus_field(pilot, "launch-command")
        await replace_text(pilot, "echo COMMAND-B")
        assert launch.is_stale()
        assert "stale" in str(app.query_one("#launch-status").render())
        # ctrl+l re-plans from the form, then asks; the dialog says what will be submitted
        await pilot.press("ctrl+l")
        await flows.wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the dialog",
                             tick=tick)
        body = str(app.screen.query_one("#confirm-body").render())
        for part in ("echo COMMAND-B", "kbd-test", "1:00:00", "1 x a6000", "single node",
                     "32G", "at most"):
            assert part in body, (part, body)
        assert "COMMAND-A" not in body
        assert isinstance(app.focused, Button) and app.focused.id == "no"  # the safe default
        await pilot.press("enter")  # = Back: nothing is submitted
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen) and app.submitted == []
        await pilot.press("ctrl+l")
        await flows.wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the dialog")
        await pilot.press("y")
        race = app.query_one(RacePane)
        await flows.wait_for(pilot, lambda: race.lanes and all(ln.job_id for ln in race.lanes)
                             and race.outcome != "preparing", "the jobs", tick=tick)
        subs = submitted(cluster, [ln.job_id for ln in race.lanes])
        assert subs
        for sub in subs:
            assert sub.command == "echo COMMAND-B"
            assert sub.nodes * sub.gpus_per_node == 1 and sub.gpu_type == "a6000"
            assert sub.name == "kbd-test" and sub.walltime_s <= 3600
            assert "--mem=32G" in sub.script
        # the Race pane has focus, so the keys work at once
        assert app.query_one("#tabs").active == "race"
        assert app.focused is app.query_one("#race-lanes")
        await pilot.press("2")
        assert app.query_one("#tabs").active == "jobs"


async def test_launch_refuses_a_bad_form_saying_why(home: Path) -> None:
    app, _cluster = make_app(home)
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        await pilot.press("3")
        await focus_field(pilot, "launch-time")
        await replace_text(pilot, "soon")
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert "not a duration" in str(app.query_one("#launch-status").render())
        assert app.submitted == []


async def test_escape_then_digits_and_letters_never_fire_while_typing(home: Path) -> None:
    app, _cluster = make_app(home)
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        await pilot.press("3")
        await type_text(pilot, "run4 q?s")  # digits, q, ? and s are text in a field
        assert app.query_one("#launch-command", Input).value == "run4 q?s"
        assert app.query_one("#tabs").active == "launch" and app.is_running
        assert len(app.screen_stack) == 1
        await pilot.press("escape")  # normal mode
        assert not isinstance(app.focused, Input)
        await pilot.press("4")
        assert app.query_one("#tabs").active == "race"
        await pilot.press("3")
        # a closed Select: letters are its search, never pane actions
        await focus_field(pilot, "launch-type")
        await pilot.press("s", "1")
        assert len(app.screen_stack) == 1 and app.query_one("#tabs").active == "launch"
        await pilot.press("escape", "1")
        assert app.query_one("#tabs").active == "cluster"
        await pilot.press("question_mark")
        await pilot.pause()
        assert len(app.screen_stack) == 2  # help
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running or app.return_code is not None


def _job(jid: str, state: str = "PENDING", **kw) -> JobInfo:
    return JobInfo(job_id=jid, name=f"job-{jid}", user="abc1de", state=state, partition="gpu",
                   gres="gpu:a6000:1", **kw)


async def test_jobs_selection_follows_its_job_across_a_reordering_refresh(home: Path) -> None:
    app, cluster = make_app(home, poll=3600.0)
    async with app.run_test(size=(120, 40)) as pilot:
        snap = await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        jobs = [_job("100"), _job("101"), _job("102", "RUNNING", nodes=("udc-an37-1",)), _job("103")]
        app.post_message(m.ClusterPolled(snap, jobs, 0.0))
        await pilot.press("2")
        pane = app.query_one(JobsPane)
        await flows.wait_for(pilot, lambda: "103" in pane.jobs, "the jobs")
        table = app.query_one("#jobs-table", DataTable)
        assert app.focused is table and pane.selected_job_id() == "100"
        await pilot.press("down", "down")
        assert pane.selected_job_id() == "102"
        # another refresh: a new job sorts first and another changes state
        jobs2 = [_job("099"), _job("100", "RUNNING", nodes=("udc-an37-2",)), _job("101"),
                 _job("102", "RUNNING", nodes=("udc-an37-1",)), _job("103")]
        app.post_message(m.ClusterPolled(snap, jobs2, 0.0))
        await flows.wait_for(pilot, lambda: "099" in pane.jobs, "the refresh")
        assert pane.selected_job_id() == "102"
        # cancel: the dialog's default (Enter) keeps the job
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.focused.id == "no"
        await pilot.press("enter")
        await pilot.pause()
        assert not any("cancel" in r.command for r in app.command_log.records())
        # / filters as you type; Escape clears it
        await pilot.press("slash")
        await type_text(pilot, "103")
        await pilot.press("enter")
        keys = [r.value for r in table.rows]
        assert "103" in keys and "102" not in keys
        assert app.focused is table
        await pilot.press("escape")
        assert "102" in [r.value for r in table.rows]
        # Enter shows the job's details
        await pilot.press("enter")
        await pilot.pause()
        assert "job " in str(app.screen.query_one("#text-body").render())


async def test_jobs_columns_fit_120_cells_with_eta_and_elapsed(home: Path) -> None:
    """A request with a long command: the command is cut, ETA and elapsed stay on screen."""
    app, cluster = make_app(home)
    tick = lambda: cluster.advance(2)  # noqa: E731
    long_command = "python train.py " + " ".join(f"--option-{i}=value-{i}" for i in range(12))
    async with app.run_test(size=(120, 40)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        winner = await flows.launch_race(pilot, long_command, tick=tick)
        cluster.advance(120)
        app.poller.poke()
        pane = app.query_one(JobsPane)
        await flows.wait_for(pilot, lambda: winner in pane.jobs and pane.jobs[winner].elapsed_s,
                             "the running winner in Jobs", tick=app.poller.poke)
        await pilot.press("2")
        await pilot.pause(0.3)
        text = html.unescape(app.export_screenshot()).replace("\xa0", " ")
        assert "ETA" in text and "elapsed" in text
        assert format_human(pane.jobs[winner].elapsed_s) in text
        assert "python t" in text and "--option-11=value-11" not in text  # cut to fit
        table = app.query_one("#jobs-table", DataTable)
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= 120


async def test_race_pane_is_frozen_after_the_win(home: Path) -> None:
    app, cluster = make_app(home)
    tick = lambda: cluster.advance(2)  # noqa: E731
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        winner = await flows.launch_race(pilot, "python train.py", tick=tick)
        race = app.query_one(RacePane)
        took = race.won_clock - race.started_clock
        title = str(app.query_one("#race-title").render())
        assert "won after" in title
        won_text = title.split("won after ")[1].split(" ")[0]
        assert race.check_action("abort", ()) is False  # no abort after the race
        # time passes: the time to win stays what it was
        cluster.advance(60)
        app.poller.poke()
        polls = app.poller.polls
        await flows.wait_for(pilot, lambda: app.poller.polls > polls + 1, "two polls")
        title = str(app.query_one("#race-title").render())
        assert f"won after {won_text}" in title
        assert race.won_clock - race.started_clock == took
        lane = race.by_job[winner]
        job = next((j for j in app.state.jobs if j.job_id == winner), None)
        assert job is not None and lane.job_state == job.state == "RUNNING"
        assert race._running_text(lane, race._clock()) == flows_format(job.elapsed_s)
        # the job ends: its end is in the lane, the timeline and the title
        for _ in range(40):
            cluster.advance(900)
            app.poller.poke()
            polls = app.poller.polls
            await flows.wait_for(pilot, lambda: app.poller.polls > polls, "a poll")
            if lane.ended_clock is not None:
                break
        await flows.wait_for(pilot, lambda: lane.job_state in ("COMPLETED", "FAILED", "ENDED")
                             and lane.ended_clock is not None, "the winner's end")
        running = race._running_text(lane, race._clock())
        cluster.advance(3600)
        app.poller.poke()
        polls = app.poller.polls
        await flows.wait_for(pilot, lambda: app.poller.polls > polls, "a poll")
        assert race._running_text(lane, race._clock()) == running  # stopped at the end
        assert any(kind in ("ended", "failed") and winner in text
                   for _w, kind, text in race.timeline)
        assert f"won after {won_text}" in str(app.query_one("#race-title").render())
        await pilot.press("x")
        await pilot.pause()
        assert not any("cancel" in r.command for r in app.command_log.records()
                       if winner in r.command)
        # the Jobs pane shows the final state and exit code the core reports
        pane = app.query_one(JobsPane)
        await flows.wait_for(pilot, lambda: winner in pane.jobs and pane.jobs[winner].is_terminal,
                             "the final state in Jobs", tick=app.poller.poke)
        job = pane.jobs[winner]
        assert job.exit_code is not None
        await pilot.press("2")
        await pilot.pause(0.3)
        cells = [str(c) for c in app.query_one("#jobs-table", DataTable).get_row(winner)]
        assert job.state[:6] in " ".join(cells) and str(job.exit_code) in cells


async def test_logs_unpause_for_the_next_job_and_e_says_when_stderr_is_empty(home: Path) -> None:
    from rv_tui.tui.widgets.logview import LogView

    app, cluster = make_app(home)
    tick = lambda: cluster.advance(2)  # noqa: E731
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        await flows.launch_race(pilot, "python train.py", tick=tick)
        view = await flows.open_winner_logs(pilot, "[rv] command: python train.py", tick=tick)
        await pilot.press("f")
        assert view.follow is False
        await pilot.press("4", "l")  # follow a job again: a pause was for the previous follow
        await pilot.pause()
        assert view.follow is True
        await flows.wait_for(pilot, lambda: view.total > 0, "log lines", tick=tick)
        has_err = any(e.stream == "err" for e in view.entries)
        await pilot.press("e")
        await pilot.pause()
        if not has_err:
            assert any("nothing to stderr" in n.message for n in app._notifications)
            assert "nothing on stderr" in view.empty_reason()
            assert view.rows == []


async def test_cluster_pane_shows_each_partition_queue_once_and_a_zoned_clock(home: Path) -> None:
    app, _cluster = make_app(home, poll=3600.0)
    async with app.run_test(size=(160, 48)) as pilot:
        snap = await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        await pilot.press("1")
        table = app.query_one("#cluster-table", DataTable)
        await flows.wait_for(pilot, lambda: table.row_count, "the table")
        queue_col = [str(table.get_row_at(i)[6]) for i in range(table.row_count)]
        parts = {av.partition for av in snap.availability()}
        assert sum(1 for q in queue_col if q) == len(parts)  # once per partition
        status = str(app.query_one("#statusbar").render())
        assert "EST cluster time" in status
