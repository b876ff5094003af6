"""The TUI's user flows against the simulated cluster (fast; run everywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rv_tui.cluster.demo import DemoCluster
from rv_tui.tui.app import RvApp

from tests.tui import flows

CONFIG = """\
# my rv config: this comment must survive edits
[connection]
host = "rivanna"  # alias from ~/.ssh/config
user = "abc1de"

[defaults]
# the time I usually want
time = "2:59:00"
gpu_type = "any"
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "rv-home"
    h.mkdir()
    (h / "config.toml").write_text(CONFIG)
    monkeypatch.setenv("RV_HOME", str(h))
    return h


def make_app(home: Path, **kw) -> tuple[RvApp, DemoCluster]:
    cluster = DemoCluster(seed=7, speed=kw.pop("speed", 600))
    work = home.parent / "work"  # launches sync from here: not this checkout
    work.mkdir(exist_ok=True)
    kw.setdefault("cwd", work)
    return RvApp(cluster, config_path=home / "config.toml", poll_interval=0.5, **kw), cluster


async def test_race_winner_logs_and_cancel_on_demo(home: Path) -> None:
    # frozen clock; the test moves simulated time 2 s per wait step (deterministic, fast)
    app, cluster = make_app(home, speed=0)
    tick = lambda: cluster.advance(2)  # noqa: E731
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        winner = await flows.launch_race(pilot, "python train.py", tick=tick)
        n_winners, not_cancelled = flows.race_losers_cancelled(app)
        assert n_winners == 1
        assert not_cancelled == []
        view = await flows.open_winner_logs(pilot, "[rv] command: python train.py", tick=tick)
        assert view.total > 0
        await flows.cancel_job(pilot, winner)


async def test_env_and_config_edit_on_demo(home: Path) -> None:
    app, _cluster = make_app(home)
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.edit_env(pilot, "HF_TOKEN", "hf_secretvalue123")
        # masked in the table until revealed
        table = app.query_one("#env-table")
        shown = str(table.get_cell("HF_TOKEN", "value"))
        assert "secretvalue" not in shown and shown.startswith("hf_s")
        refused = await flows.edit_config(pilot, "defaults.time", "abc")
        assert refused and "not a duration" in refused
        assert await flows.edit_config(pilot, "defaults.time", "4h") is None
        text = (home / "config.toml").read_text()
        assert 'time = "4h"' in text
        assert "# my rv config: this comment must survive edits" in text
        assert "# the time I usually want" in text
        assert "# alias from ~/.ssh/config" in text


async def test_status_bar_and_demo_banner(home: Path) -> None:
    app, _cluster = make_app(home, speed=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        assert app.query_one("#demo-banner").display
        status = str(app.query_one("#statusbar").render())
        assert "connected" in status and "updated 09:00" in status
        for key, pane in (("2", "jobs"), ("4", "race"), ("8", "commands"), ("1", "cluster")):
            await pilot.press(key)
            assert app.query_one("#tabs").active == pane
        # the command log shows the cluster calls the demo served
        assert app.command_log is not None and any("snapshot" in r.command
                                                   for r in app.command_log.records())


async def test_failed_polls_keep_data_and_show_reconnecting(home: Path) -> None:
    app, cluster = make_app(home, speed=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await flows.wait_for(pilot, lambda: app.state.snapshot, "first poll")
        rows = app.query_one("#cluster-table").row_count
        assert rows > 0

        async def broken():
            raise OSError("connection reset by peer")

        cluster.snapshot = broken  # type: ignore[method-assign]
        app.poller.poke()
        await flows.wait_for(pilot, lambda: app.state.connection == "reconnecting", "reconnecting")
        await pilot.pause()
        assert app.query_one("#reconnect-banner").display
        assert app.query_one("#cluster-table").row_count == rows  # last data kept


async def test_command_palette_lists_our_commands(home: Path) -> None:
    from rv_tui.tui.commands import RvCommands, _commands

    app, _cluster = make_app(home, speed=0)
    async with app.run_test(size=(160, 48)) as pilot:
        names = [name for name, _help, _cb in _commands(app)]
        assert "Env: add variable" in names and "Go to Logs" in names
        assert RvCommands in app.COMMANDS
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to logs")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.query_one("#tabs").active == "logs"
