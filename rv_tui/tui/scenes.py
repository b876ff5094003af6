"""Deterministic demo scenes: one per pane, for SVG snapshot tests and ``scripts/screenshots.py``.

Each scene runs the real app against ``DemoCluster(seed=SEED, speed=0)`` (time moves only when
the scene calls ``advance``) with a frozen app clock, so the same scene always renders the same
screen.  Scenes drive the app with keys, like a user.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot

from rv_tui.tui.app import RvApp

SEED = 1
SIZE = (150, 44)
#: 2026-11-23 09:00 America/New_York, the seeded demo's start.
FROZEN = 1795442400.0

SCENE_CONFIG = """\
# rv configuration (demo)
[connection]
host = "rivanna"  # alias from ~/.ssh/config
user = "demo1a"

[defaults]
account = "mygroup"
gpu_type = "any"
time = "2:59:00"  # backfill-friendly
ai_naming = false

[paths]
scratch = "/scratch/demo1a"
"""


def scene_app(workdir: Path, *, fix_group_ids: bool = True) -> RvApp:
    """The app on the seeded, frozen demo with a config file under ``workdir``."""
    from rv_tui.cluster.demo import DemoCluster

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.toml"
    cfg.write_text(SCENE_CONFIG)
    os.environ["RV_HOME"] = str(workdir)  # the group store writes here, not in ~/.rv
    if fix_group_ids:  # group ids appear in job output; tests monkeypatch this themselves
        import rv_tui.jobs.store as store

        store.new_group_id = fixed_group_id
    cluster = DemoCluster(seed=SEED, speed=0)
    return RvApp(cluster, config_path=cfg, poll_interval=3600.0, clock=lambda: FROZEN)


def fixed_group_id() -> str:
    return "g0demo0scene01"


async def _until(pilot: Pilot, cond: Callable[[], object], step: Callable[[], None] | None = None,
                 timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("scene did not settle")
        if step:
            step()
        await pilot.pause(0.05)


async def _first_poll(pilot: Pilot) -> RvApp:
    app: RvApp = pilot.app  # type: ignore[assignment]
    await _until(pilot, lambda: app.state.snapshot is not None)
    return app


async def _poll_after(pilot: Pilot, advance_s: float) -> None:
    app: RvApp = pilot.app  # type: ignore[assignment]
    before = app.poller.polls
    app.cluster.advance(advance_s)
    app.poller.poke()
    await _until(pilot, lambda: app.poller.polls > before)
    await pilot.pause()


async def cluster_scene(pilot: Pilot) -> None:
    await _first_poll(pilot)
    for _ in range(12):  # a short history for the chart: 12 polls, 5 simulated minutes apart
        await _poll_after(pilot, 300)
    await pilot.press("1")
    await pilot.pause()


async def _race(pilot: Pilot, command: str) -> RvApp:
    app = await _first_poll(pilot)
    await pilot.press("3")
    box = app.query_one("#launch-command")
    box.focus()
    box.value = command  # type: ignore[attr-defined]
    await pilot.press("ctrl+t")
    launch = app.query_one("LaunchPane")
    await _until(pilot, lambda: launch.plan is not None)  # type: ignore[attr-defined]
    return app


async def launch_scene(pilot: Pilot) -> None:
    await _race(pilot, "python train.py --epochs 3")
    await pilot.pause()


async def race_scene(pilot: Pilot) -> None:
    app = await _race(pilot, "python train.py --epochs 3")
    await pilot.press("ctrl+l")
    await pilot.pause()
    await pilot.press("y")
    race = app.query_one("RacePane")
    # every strategy submitted at the same simulated instant, then one step of time: which job
    # claims the group is decided inside the simulation, not by how fast this machine is
    await _until(pilot, lambda: race.lanes and all(ln.job_id for ln in race.lanes))  # type: ignore[attr-defined]
    app.cluster.advance(30)
    await _until(pilot, lambda: race.winner_id)  # type: ignore[attr-defined]
    await pilot.pause(0.3)


async def logs_scene(pilot: Pilot) -> None:
    await race_scene(pilot)
    app: RvApp = pilot.app  # type: ignore[assignment]
    app.cluster.advance(1200)  # the job runs to completion: the follower reads everything
    await pilot.press("l")
    logs = app.query_one("LogsPane")
    await _until(pilot, lambda: logs.ended)  # type: ignore[attr-defined]
    await pilot.pause()
    await pilot.press("f")  # pause following, as a reader would, and go to the top
    app.query_one("#log-view").scroll_to(y=0, animate=False)  # type: ignore[attr-defined]
    await pilot.pause()


async def jobs_scene(pilot: Pilot) -> None:
    await race_scene(pilot)
    app: RvApp = pilot.app  # type: ignore[assignment]
    await _poll_after(pilot, 30)
    await pilot.press("2")
    await pilot.pause()


async def env_scene(pilot: Pilot) -> None:
    app = await _first_poll(pilot)
    from rv_tui.workspace.envstore import EnvStore

    await EnvStore(app.cluster).set_many([("HF_TOKEN", "hf_AbCdEfGhIjKlMnOp"),
                                          ("WANDB_PROJECT", "llm-finetune"),
                                          ("OPENAI_API_KEY", "sk-proj-0123456789abcdef")])
    await pilot.press("6")
    env = app.query_one("EnvPane")
    env.reload()  # type: ignore[attr-defined]
    await _until(pilot, lambda: len(env.variables) == 3)  # type: ignore[attr-defined]
    await pilot.pause()


async def config_scene(pilot: Pilot) -> None:
    await _first_poll(pilot)
    await pilot.press("7")
    await pilot.pause()


async def commands_scene(pilot: Pilot) -> None:
    await _first_poll(pilot)
    await _poll_after(pilot, 60)
    await pilot.press("8")
    await pilot.pause()


async def help_scene(pilot: Pilot) -> None:
    await _first_poll(pilot)
    await pilot.press("question_mark")
    await pilot.pause()


SCENES: dict[str, Callable[[Pilot], Awaitable[None]]] = {
    "cluster": cluster_scene,
    "jobs": jobs_scene,
    "launch": launch_scene,
    "race": race_scene,
    "logs": logs_scene,
    "env": env_scene,
    "config": config_scene,
    "commands": commands_scene,
    "help": help_scene,
}


async def render_scene(name: str, workdir: Path, path: Path) -> None:
    """Run one scene headless and save its SVG to ``path``."""
    app = scene_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        await SCENES[name](pilot)
        await pilot.pause()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(app.export_screenshot(title=f"rv — {name}"))


def render_all(out: Path, workdir: Path) -> list[Path]:
    paths = []
    for name in SCENES:
        target = out / f"{name}.svg"
        asyncio.run(render_scene(name, workdir / name, target))
        paths.append(target)
    return paths
