"""The TUI's user flows against the local Slurm cluster over SSH (marker ``cluster``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rv_tui.cluster import open_cluster
from rv_tui.config import load_config
from rv_tui.tui.app import RvApp

from tests.tui import flows

pytestmark = pytest.mark.cluster


async def _app(rv_home: Path, cwd: Path | None = None) -> RvApp:
    cluster = await open_cluster(load_config(rv_home / "config.toml"))
    if cwd is None:  # never sync this checkout to the test cluster
        cwd = rv_home.parent / "not-a-project"
        cwd.mkdir(exist_ok=True)
    return RvApp(cluster, config_path=rv_home / "config.toml", poll_interval=1.0,
                 probe_windows=False, cwd=cwd)


async def test_race_logs_cancel_on_real_cluster(rv_home: Path, own_jobs: None, tmp_path: Path) -> None:
    # a tiny project: the launch syncs it and the job runs its script from the snapshot,
    # exactly as `rv run bash job.sh` would (the TUI calls the same prepare_launch)
    project = tmp_path / f"tui-proj-{uuid.uuid4().hex[:8]}"  # a fresh remote code dir each run
    project.mkdir()
    marker = "rv-tui-flow-marker"
    (project / "job.sh").write_text(f'echo "{marker} in $(basename "$(dirname "$PWD")")"; sleep 300\n')
    (project / "pyproject.toml").write_text('[project]\nname = "tui-proj"\n')
    app = await _app(rv_home, cwd=project)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll", 60)
            assert app.command_log is not None  # the SSH pool's own log, not the recorder
            winner = await flows.launch_race(pilot, "bash job.sh", timeout=120)
            launch = app.query_one("LaunchPane").launch
            assert launch.workspace is not None and launch.workspace.project is not None
            assert sorted(f.rel for f in launch.workspace.sync_result.plan.upload) == ["job.sh", "pyproject.toml"]
            n_winners, not_cancelled = flows.race_losers_cancelled(app)
            assert n_winners == 1 and not_cancelled == []
            # the script ran from a snapshot dir (…/snapshots/<name>-<ms>), i.e. it was synced
            view = await flows.open_winner_logs(pilot, f"{marker} in snapshots", timeout=120)
            assert view.total >= 1
            await flows.cancel_job(pilot, winner, timeout=120)
            assert any("scancel" in r.command for r in app.command_log.records())
    finally:
        await app.cluster.close()


async def test_env_and_config_on_real_cluster(rv_home: Path) -> None:
    cfg = rv_home / "config.toml"
    cfg.write_text("# my comment stays\n" + cfg.read_text())
    app = await _app(rv_home)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await flows.edit_env(pilot, "RV_TUI_TEST_KEY", "value-1", timeout=60)
            refused = await flows.edit_config(pilot, "defaults.gpu_type", "b200x")
            assert refused and "not a known GPU type" in refused
            assert await flows.edit_config(pilot, "defaults.time", "1h") is None
            text = cfg.read_text()
            assert text.startswith("# my comment stays\n") and 'time = "1h"' in text
            assert "b200x" not in text
    finally:
        await app.cluster.close()


async def test_reconnect_banner_follows_the_pool(rv_home: Path, tmp_path: Path) -> None:
    """Killing our own sshd session shows the banner at once (no poll runs: interval 1 h) and
    the reconnect clears it; the panes keep their data throughout."""
    from tests.test_remote_pool import kill_own_session

    cluster = await open_cluster(load_config(rv_home / "config.toml"))
    app = RvApp(cluster, config_path=rv_home / "config.toml", poll_interval=3600.0,
                probe_windows=False, cwd=tmp_path)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll", 60)
            rows = app.query_one("#cluster-table").row_count
            polls = app.poller.polls
            banner = app.query_one("#reconnect-banner")
            assert not banner.display and banner.shown == 0
            kill_own_session(cluster.pool)
            await flows.wait_for(pilot, lambda: banner.shown > 0, "the reconnect banner", 30)
            assert "reconnecting" in app.state.transitions
            assert app.poller.polls == polls  # the pool told us; no poll had to fail first
            await flows.wait_for(pilot, lambda: app.state.connection == "connected"
                                 and not banner.display, "the banner to clear", 60)
            assert app.query_one("#cluster-table").row_count == rows
            await flows.wait_for(pilot, lambda: app.poller.polls > polls, "a refresh after reconnecting", 60)
            assert "connected" in str(app.query_one("#statusbar").render())
    finally:
        await cluster.close()
