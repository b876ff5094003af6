"""What the idle dashboard costs slurmctld, counted on the real test cluster (counts, not times).

The headless app idles on its Cluster pane; each refresh is poked (the cadence itself is a
constant in rv_tui.tui.workers) and the remote commands it sent are read from the pool's
command log. Each is then costed exactly: re-run on this host as uid ``nobody`` (no other
session uses it) and counted by ``sdiag`` (bench/bench_controller_load.py does the same).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from rv_tui.quoting import join

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_controller_load",
                                                  ROOT / "bench" / "bench_controller_load.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_controller_load", mod)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def kind(cmd: str) -> str:
    for word in ("sbatch --test-only", "scontrol show job -o |", "sinfo", "squeue", "scontrol",
                 "sacct", "sbatch", "date +"):
        if word in cmd:
            return word
    return "other"


async def _until(pilot, pred, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


async def _poll(app, pilot) -> list[str]:
    """Poke one refresh and return the remote commands sent while it ran."""
    log = app.cluster.pool.command_log
    n0, p0 = log.total, app.poller.polls
    app.poller.poke()
    await _until(pilot, lambda: app.poller.polls > p0, "a poll")
    new = log.total - n0
    return [r.command for r in log.records()[-new:] if r.kind in ("run", "batch")] if new else []


@pytest.fixture
def direct(monkeypatch, rv_home):
    monkeypatch.setenv("RV_NO_AGENT", "1")  # the pool (and its command log) in this process
    return rv_home


def test_idle_dashboard_refresh_is_three_rpcs(direct):
    """One refresh = date + one sinfo + one ``scontrol show job -o`` (was sinfo + 3 squeues =
    8 RPCs); no backfill probes by default; at most 3 slurmctld RPCs, so 4 refreshes a minute
    (15 s old data) stay within 12 RPCs a minute."""
    from rv_tui.cluster import open_cluster
    from rv_tui.config import config_path, load_config
    from rv_tui.tui.app import RvApp

    async def main() -> list[list[str]]:
        cluster = await open_cluster(load_config())
        try:
            app = RvApp(cluster, config_path=config_path())
            async with app.run_test(size=(160, 50)) as pilot:
                await _until(pilot, lambda: app.poller.polls >= 1, "the first poll")
                return [await _poll(app, pilot) for _ in range(3)]
        finally:
            await cluster.close()

    polls = asyncio.run(main())
    bench = _bench()
    for cmds in polls:
        kinds = Counter(kind(c) for c in cmds)
        # final-state lookups (``squeue -j``) of another session's rvtest job ending are not
        # the idle cost; the listing and queue-depth squeues are
        listing = [c for c in cmds if kind(c) == "squeue" and " -j " not in c]
        assert listing == [], cmds
        assert kinds["sbatch --test-only"] == 0, cmds
        assert kinds["sinfo"] == 1 and kinds["scontrol show job -o |"] == 1, cmds
        per_poll = [c for c in cmds if kind(c) in ("sinfo", "scontrol show job -o |", "date +")]
        assert sum(bench.rpc_cost(c) for c in per_poll) <= 3, [(c[:60], bench.rpc_cost(c)) for c in per_poll]


def test_backfill_column_is_opt_in(direct):
    """``b`` on the Cluster pane turns the probes on (a refresh then probes), ``b`` again off;
    the pane says so and how old the windows are."""
    from rv_tui.cluster import open_cluster
    from rv_tui.config import config_path, load_config
    from rv_tui.tui.app import RvApp
    from rv_tui.tui.panes.cluster import ClusterPane

    async def main() -> None:
        cluster = await open_cluster(load_config())
        try:
            app = RvApp(cluster, config_path=config_path())
            async with app.run_test(size=(160, 50)) as pilot:
                await _until(pilot, lambda: app.poller.polls >= 1, "the first poll")
                pane = app.query_one(ClusterPane)
                summary = lambda: str(app.query_one("#cluster-summary").render())  # noqa: E731
                # the poll's message reaches the pane a moment after the poll count moves
                await _until(pilot, lambda: "backfill off" in summary(), "the summary")
                assert not pane.backfill_on()
                assert not any(kind(c) == "sbatch --test-only" for c in await _poll(app, pilot))
                p0 = app.poller.polls
                await pilot.press("b")  # poked: the next refresh probes
                await _until(pilot, lambda: app.poller.polls > p0 and app.poller.windows_at,
                             "a refresh with probes")
                assert pane.backfill_on()
                await _until(pilot, lambda: " old (b hides it)" in summary(), "the windows' age")
                # fresh windows are not probed again within BACKFILL_MAX_AGE_S
                assert not any(kind(c) == "sbatch --test-only" for c in await _poll(app, pilot))
                await pilot.press("b")
                assert not pane.backfill_on()
                app.poller.windows_at = 0.0  # as if the windows were old: still no probe (off)
                assert not any(kind(c) == "sbatch --test-only" for c in await _poll(app, pilot))
                assert "backfill off" in summary()
        finally:
            await cluster.close()

    asyncio.run(main())


def test_ambiguous_job_name_falls_back_to_squeue(direct, slurm_cluster):
    """A job whose name fakes another owner's ``UserId=`` is still listed exactly, through the
    squeue fallback (name last, unambiguous)."""
    from rv_tui.cluster import open_cluster
    from rv_tui.config import load_config

    name = f"x UserId={slurm_cluster.other_user}(1) TresPerNode=gres:gpu:8 y"

    async def main() -> None:
        cluster = await open_cluster(load_config())
        job_id = None
        try:
            res = await cluster.exec(join(["sbatch", "--parsable", "--hold", "-J", name, "-p", "standard",
                                           "-t", "5", "-o", "/dev/null", "--wrap", "sleep 1"]))
            assert res.exit_status == 0, res.stderr
            job_id = res.stdout.strip().split(";")[0]
            log = cluster.pool.command_log
            n0 = log.total
            _snap, jobs = await cluster.poll()
            cmds = [r.command for r in log.records()[-(log.total - n0):]]
            mine = [j for j in jobs if j.job_id == job_id]
            assert len(mine) == 1 and mine[0].name == name and mine[0].gres == ""
            assert any(kind(c) == "squeue" and job_id in c for c in cmds)  # asked about it alone
            await cluster.cancel([job_id])
            deadline = time.monotonic() + 60
            while True:  # once seen finished, it is not asked about again
                _snap, jobs = await cluster.poll()
                if not any(j.job_id == job_id for j in jobs):
                    break
                assert time.monotonic() < deadline, "the cancelled job stayed listed"
            n0 = log.total
            await cluster.poll()
            assert not [r.command for r in log.records()[-(log.total - n0):] if job_id in r.command]
            job_id = None
        finally:
            if job_id:
                await cluster.cancel([job_id])
            await cluster.close()

    asyncio.run(main())
