"""Deterministic demo scenes: one per pane, for SVG snapshot tests and ``scripts/screenshots.py``.

Each scene runs the real app against ``DemoCluster(seed=SEED, speed=0)`` (time moves only when
the scene calls ``advance``) with a frozen app clock, so the same scene always renders the same
screen.  Scenes drive the app with keys, like a user.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
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


def scene_app(workdir: Path, *, fix_group_ids: bool = True,
              patch: Callable[[object, str, object], None] = setattr) -> RvApp:
    """The app on the seeded, frozen demo with a config file under ``workdir``."""
    from rv_tui.cluster.demo import DemoCluster

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.toml"
    cfg.write_text(SCENE_CONFIG)
    os.environ["RV_HOME"] = str(workdir)  # the group store writes here, not in ~/.rv
    if fix_group_ids:  # group ids appear in job output: number them per scene
        import rv_tui.jobs.launch as launch
        import rv_tui.jobs.store as store

        ids = fixed_group_ids()
        patch(store, "new_group_id", ids)
        patch(launch, "new_group_id", ids)
    cluster = DemoCluster(seed=SEED, speed=0)
    work = workdir / "work"  # launches sync from here (not a project: nothing to upload)
    work.mkdir(exist_ok=True)
    # the app clock is the simulation's: frozen until a scene advances it, so the race timeline
    # shows simulated seconds and every render of a scene is identical
    return RvApp(cluster, config_path=cfg, poll_interval=3600.0, clock=cluster.clock.now, cwd=work)


def fixed_group_ids() -> Callable[[], str]:
    """A fresh generator of deterministic group ids (g0demo0scene01, …02, …)."""
    counter = iter(range(1, 1000))
    return lambda: f"g0demo0scene{next(counter):02d}"


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


_KEY_NAMES = {" ": "space", "/": "slash", ".": "full_stop", "-": "minus", ":": "colon",
              "_": "underscore", "=": "equals_sign"}


async def _type(pilot: Pilot, text: str, *, replace: bool = False) -> None:
    """Type into the focused field, as a user would (``replace``: clear it first)."""
    if replace:
        await pilot.press("end", "ctrl+u")
    await pilot.press(*[_KEY_NAMES.get(c, c) for c in text])


async def _form(pilot: Pilot, command: str, *, gpus: int = 1, gpu_type: str = "any",
                time_text: str = "2:59:00", mem: str = "") -> RvApp:
    """Fill the launch form with keys and preview (ctrl+t) until the plan is shown."""
    app: RvApp = pilot.app  # type: ignore[assignment]
    await pilot.press("3")  # focus: the command field
    await _type(pilot, command, replace=True)
    await pilot.press("tab")
    await _type(pilot, str(gpus), replace=True)
    await pilot.press("tab")
    if app.query_one("#launch-type").value != gpu_type:  # type: ignore[attr-defined]
        await pilot.press("enter")
        await pilot.pause()
        await _type(pilot, gpu_type)
        await pilot.press("enter")
        await pilot.pause()
    await pilot.press("tab")
    await _type(pilot, time_text, replace=True)
    await pilot.press("tab")
    await _type(pilot, mem, replace=True)
    launch = app.query_one("LaunchPane")
    launch.plan = None  # type: ignore[attr-defined]
    await pilot.press("ctrl+t")
    await _until(pilot, lambda: launch.plan is not None)  # type: ignore[attr-defined]
    await pilot.press("escape")  # normal mode: the plan table
    await pilot.pause()
    return app


async def _launch(pilot: Pilot, step_s: float = 120.0, max_steps: int = 60,
                  want_winner: bool = True) -> RvApp:
    """Confirm the previewed launch; then step simulated time until a winner (or not).

    Every step waits for the race engine to read the cluster once before the next step, so
    each event is stamped with the same simulated time on every run."""
    app: RvApp = pilot.app  # type: ignore[assignment]
    await pilot.press("ctrl+l")
    await pilot.pause()
    await pilot.press("y")
    race = app.query_one("RacePane")
    await _until(pilot, lambda: race.lanes and all(ln.job_id for ln in race.lanes)  # type: ignore[attr-defined]
                 and race.outcome != "preparing")  # type: ignore[attr-defined]
    log = app.command_log
    assert log is not None

    def reads() -> int:
        return sum(1 for r in log.records() if r.command.startswith("jobs("))

    for _ in range(max_steps if want_winner else 1):
        seen = reads()
        await _until(pilot, lambda: reads() > seen or race.winner_id)  # type: ignore[attr-defined]
        if race.winner_id:  # type: ignore[attr-defined]
            break
        app.cluster.advance(step_s)
        seen = reads()
        await _until(pilot, lambda: reads() > seen + 1 or race.winner_id)  # type: ignore[attr-defined]
    if want_winner:
        await _until(pilot, lambda: race.winner_id)  # type: ignore[attr-defined]
    await pilot.pause()
    return app


async def launch_scene(pilot: Pilot) -> None:
    await _first_poll(pilot)
    await _form(pilot, "python train.py --epochs 3", gpus=4, time_text="8:00:00", mem="600G")
    await pilot.pause()


async def race_scene(pilot: Pilot) -> None:
    """A big-memory 4-GPU request: every lane queues (plain-language reason, estimated start);
    the A100 80GB lane starts after ~40 simulated minutes and the others are cancelled."""
    await _first_poll(pilot)
    await _form(pilot, "python train.py --epochs 3", gpus=4, time_text="8:00:00", mem="600G")
    await _launch(pilot)
    await pilot.pause(0.3)


async def logs_scene(pilot: Pilot) -> None:
    """A 2-node job's merged log: [node0]/[node1] prefixes in their colours and stderr lines."""
    app = await _first_poll(pilot)
    await _form(pilot, "torchrun --nnodes 2 train.py --epochs 2", gpus=8, gpu_type="a100_80",
                time_text="8:00:00")
    await _launch(pilot, step_s=300)
    await _poll_after(pilot, 1200)  # the job runs to completion: the follower reads everything
    await pilot.press("l")
    logs = app.query_one("LogsPane")
    await _until(pilot, lambda: logs.ended)  # type: ignore[attr-defined]
    await pilot.pause()
    await pilot.press("f")  # pause following, as a reader would, and go to the top
    app.query_one("#log-view").scroll_to(y=0, animate=False)  # type: ignore[attr-defined]
    await pilot.pause()


async def jobs_scene(pilot: Pilot) -> None:
    """Three requests: one finished, a 2-node job running, one queued with its reason and ETA."""
    app = await _first_poll(pilot)
    await _form(pilot, "python eval.py --split test", gpus=1)
    await _launch(pilot)
    app.cluster.advance(1800)  # the evaluation finishes
    await _form(pilot, "python sweep.py --trial 7", gpus=4, gpu_type="h200", time_text="8:00:00")
    await _launch(pilot, want_winner=False)
    await _form(pilot, "torchrun --nnodes 2 train.py --epochs 20", gpus=8, gpu_type="a100_80", time_text="8:00:00")
    await _launch(pilot, step_s=120)  # fine steps: the winner is seen soon after it starts
    await _poll_after(pilot, 20)
    await pilot.press("2")
    await pilot.pause()
    # the finished request's final state is looked up once: draw after it arrived
    await _until(pilot, lambda: app.lookups_pending == 0 and "1000172" in app.state.final)
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


def _without_toasts(scene: Callable[[Pilot], Awaitable[None]]) -> Callable[[Pilot], Awaitable[None]]:
    """Run ``scene``, then clear the notifications: a toast lives for a wall-clock timeout, so
    whether it is still on screen would depend on how fast the machine ran the scene."""
    async def run(pilot: Pilot) -> None:
        await scene(pilot)
        pilot.app.clear_notifications()
        await pilot.pause()

    run.__name__ = scene.__name__
    return run


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
SCENES = {name: _without_toasts(scene) for name, scene in SCENES.items()}


_TEXT_RUN = re.compile(r'(<text [^>]*?x=")([0-9.]+)("[^>]*?textLength=")([0-9.]+)("[^>]*>)((?:&#160;)+)([^<]+)</text>')


def keep_leading_spaces(svg: str) -> str:
    """Start each text run at its first visible character.

    Rich's SVG export puts every styled run in one ``<text>`` at its cell's x with a
    ``textLength``; a run that starts with spaces (``"  job 123"`` after a bold label) relies on
    the renderer keeping leading no-break spaces, which librsvg (and so many image viewers and
    converters) does not: the text slid left onto its neighbour ("slicejob").  Moving x past the
    spaces draws the same screen in every renderer.
    """
    def fix(mt: re.Match[str]) -> str:
        n_lead = mt.group(6).count("&#160;")
        rest = mt.group(7)
        n_rest = len(html.unescape(rest))
        length = float(mt.group(4))
        cell = length / (n_lead + n_rest)
        x = float(mt.group(2)) + cell * n_lead
        return (f"{mt.group(1)}{x:g}{mt.group(3)}{length - cell * n_lead:g}{mt.group(5)}"
                f"{rest}</text>")

    return _TEXT_RUN.sub(fix, svg)


async def render_scene(name: str, workdir: Path, path: Path) -> None:
    """Run one scene headless and save its SVG to ``path``."""
    app = scene_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        await SCENES[name](pilot)
        await pilot.pause()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(keep_leading_spaces(app.export_screenshot(title=f"rv — {name}")))


def render_all(out: Path, workdir: Path) -> list[Path]:
    paths = []
    for name in SCENES:
        target = out / f"{name}.svg"
        asyncio.run(render_scene(name, workdir / name, target))
        paths.append(target)
    # the README's lead image: the screen `rv` opens on (the cluster pane)
    dashboard = out / "dashboard.svg"
    dashboard.write_text((out / "cluster.svg").read_text().replace("rv — cluster", "rv — dashboard"))
    paths.append(dashboard)
    return paths
