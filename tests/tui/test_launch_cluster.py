"""The launch form on the real test cluster, keys only: what squeue runs is what the form says.

Fill the form, preview, then change the GPUs and the command; ctrl+l must re-plan and submit the
edited request: squeue's gres and the job's own batch script are checked on the cluster.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rv_tui.cluster import open_cluster
from rv_tui.config import load_config
from rv_tui.quoting import join
from rv_tui.tui.app import RvApp
from rv_tui.tui.panes.launch import LaunchPane
from rv_tui.tui.panes.race import RacePane
from rv_tui.tui.widgets.dialogs import ConfirmScreen

from tests.tui import flows
from tests.tui.keys import focus_field, pick_option, replace_text, type_text

pytestmark = pytest.mark.cluster


async def test_launch_submits_the_edited_form_on_the_real_cluster(rv_home: Path, own_jobs: None) -> None:
    cluster = await open_cluster(load_config(rv_home / "config.toml"))
    cwd = rv_home.parent / "not-a-project"
    cwd.mkdir(exist_ok=True)
    app = RvApp(cluster, config_path=rv_home / "config.toml", poll_interval=2.0,
                probe_windows=False, cwd=cwd)
    tag = uuid.uuid4().hex[:6]
    name = f"kbd-{tag}"
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll", 60)
            await pilot.press("3")
            launch = app.query_one(LaunchPane)
            await type_text(pilot, f"echo RVKEY-A-{tag} && sleep 240")
            await pilot.press("tab")
            await replace_text(pilot, "2")
            await pilot.press("tab")
            await pick_option(pilot, "a6000")
            await pilot.press("tab")
            await replace_text(pilot, "20m")
            await pilot.press("tab", "tab")
            await type_text(pilot, name)
            await pilot.press("ctrl+t")
            await flows.wait_for(pilot, lambda: launch.plan is not None, "the preview", 120)
            assert launch.request.gpus == 2
            await focus_field(pilot, "launch-gpus")
            await replace_text(pilot, "1")
            await focus_field(pilot, "launch-command")
            await replace_text(pilot, f"echo RVKEY-B-{tag} && sleep 240")
            await pilot.press("ctrl+l")
            await flows.wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen),
                                 "the confirm dialog", 120)
            body = str(app.screen.query_one("#confirm-body").render())
            assert f"RVKEY-B-{tag}" in body and "1 x a6000" in body and name in body
            await pilot.press("y")
            race = app.query_one(RacePane)
            await flows.wait_for(pilot, lambda: race.lanes and all(
                ln.job_id or ln.state == "REFUSED" for ln in race.lanes)
                and race.outcome != "preparing", "the submitted jobs", 120)
            ids = [ln.job_id for ln in race.lanes if ln.job_id]
            assert ids
            jobs = await cluster.jobs(ids)
            assert jobs and all(j.gres.endswith("a6000:1") for j in jobs), [j.gres for j in jobs]
            assert all(j.name == name for j in jobs)
            for jid in ids:
                res = await cluster.exec(join(["scontrol", "write", "batch_script", jid, "-"]))
                assert res.ok, res.stderr
                assert f"RVKEY-B-{tag}" in res.stdout and f"RVKEY-A-{tag}" not in res.stdout
            assert app.focused is app.query_one("#race-lanes")
    finally:
        await cluster.close()


async def test_the_dashboard_starts_the_daily_keepalive(rv_home: Path) -> None:
    from rv_tui.workspace.keepalive import stamp_path

    stamp_path().unlink(missing_ok=True)
    cfg = rv_home / "config.toml"
    cfg.write_text(cfg.read_text().replace("[scratch_keepalive]\nenabled = false",
                                           "[scratch_keepalive]\nenabled = true"))
    cluster = await open_cluster(load_config(rv_home / "config.toml"))
    app = RvApp(cluster, config_path=rv_home / "config.toml", poll_interval=3600.0,
                probe_windows=False, cwd=rv_home.parent)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await flows.wait_for(pilot, lambda: app.command_log is not None and any(
                "nohup sh -c" in r.command for r in app.command_log.records()),
                "the keepalive command", 60)
            assert stamp_path().exists()
    finally:
        await cluster.close()
