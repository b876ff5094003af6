"""The race through real Slurm events, on the local test cluster (issue 11, item 9, my cases).

Each case counts, from what the command itself left behind (one marker line per run: job id,
SLURM_RESTART_COUNT, host), the runs, double runs (a second *job* running the command), lost runs
(the winner's work not done) and orphans (a job of the group still queued or running at the end):

* same-cycle starts, forced: every strategy submitted held, then one ``scontrol release`` for all;
  the better-ranked job must win although the entries were handed over worst first;
* an idle race with the begin stagger: the best strategy wins and no loser ever gets an allocation;
* requeue of the winner (``scontrol requeue`` then ``StartTime=now``): the same job id runs the
  command again, the log keeps both runs and marks the restart, no loser runs;
* node failure under the winner (its node set DOWN, restored in a finally): Slurm requeues it,
  it runs again on another node;
* a claim that cannot be made (group dir not writable): the job fails, names the path, runs nothing;
* a sibling submitted after the winner claimed, with no client watching: the winner cancels it.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from rv_tui.allocator.model import Request, Strategy, StrategyKind
from rv_tui.allocator.race import Race
from rv_tui.allocator.rank import rank_key
from rv_tui.cluster.base import JobInfo
from rv_tui.gpus import GPU_SPECS
from rv_tui.jobs.launch import build_entries
from rv_tui.jobs.store import GroupStore, new_group_id
from rv_tui.jobs.templates import CLAIM_ERROR_EXIT, JobContext, build_submission
from rv_tui.paths import RemotePaths
from rv_tui.quoting import join, q

pytestmark = pytest.mark.cluster


@pytest.fixture
async def cluster(slurm_cluster, rv_home, own_jobs) -> AsyncIterator:
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    c = SshCluster.from_config(load_config())
    await c.connect()
    try:
        yield c
    finally:
        await c.close()


def S(gpu_type: str, gpn: int, su: float, *opts: str) -> Strategy:
    spec = GPU_SPECS[gpu_type]
    return Strategy(
        id=f"{gpu_type}-1x{gpn}", label=f"{spec.label} 1x{gpn}", gpu_type=gpu_type,
        partition=spec.partition, nodes=1, gpus_per_node=gpn, kind=StrategyKind.BACKFILL,
        walltime_s=900, time_min_s=None, est_wait_s=0.0, est_su=su, mem="4G", cpus_per_task=1,
        constraint=spec.constraint, total_time_s=900, sbatch_options=tuple(opts),
    )


def slurm_admin(slurm_cluster, *args: str) -> str:
    """scontrol as root on this host (the test cluster's admin), for requeue/node faults."""
    env = {**os.environ, "SLURM_CONF": slurm_cluster.slurm_conf}
    r = subprocess.run(["scontrol", *args], env=env, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"scontrol {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def marker_cmd(marker: str, first_run_sleep: int = 0, sleep: int = 2) -> str:
    """One line per run; the first run (restart count 0) may linger so a fault can hit it."""
    line = f'echo "$SLURM_JOB_ID ${{SLURM_RESTART_COUNT:-0}} $(hostname)" >> {q(marker)}'
    if first_run_sleep:
        return f'{line}; if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then sleep {first_run_sleep}; fi; sleep {sleep}'
    return f"{line}; sleep {sleep}"


async def runs(cluster, marker: str) -> list[list[str]]:
    try:
        text = (await cluster.read_file(marker)).decode()
    except Exception:
        return []
    return [ln.split() for ln in text.splitlines() if ln.strip()]


async def poll(what: str, fn, timeout: float = 120.0, every: float = 0.5):
    """Poll *fn* until truthy; a controller that does not answer (another session's fault test
    restarting slurmctld) only means "ask again"."""
    from rv_tui.cluster.base import ControllerUnavailable

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except ControllerUnavailable:
            last = None
        if last:
            return last
        await asyncio.sleep(every)
    pytest.fail(f"{what} not seen within {timeout:.0f}s (last: {last!r})")


class Disturbed(Exception):
    """Someone else cancelled our job (the shared cluster: another session's queue cleanup)."""


def check_not_disturbed(final: dict[str, JobInfo], job_id: str) -> None:
    if final[job_id].state == "CANCELLED":  # these tests never cancel a winner themselves
        raise Disturbed(f"job {job_id} was cancelled by someone else")


async def attempts(case, tries: int = 3) -> None:
    """Run *case* again when another session cancelled its jobs (never happens in serial CI)."""
    for i in range(tries):
        try:
            await case()
            return
        except Disturbed as exc:
            if i == tries - 1:
                pytest.fail(f"disturbed {tries} times: {exc}")


async def all_ended(cluster, ids: Sequence[str], timeout: float = 180) -> dict[str, JobInfo]:
    missing_since: list[float] = []

    async def check():
        infos = {j.job_id: j for j in await cluster.jobs(list(ids))}
        if any(j not in infos for j in ids):  # well inside MinJobAge: the controller lost them
            missing_since.append(time.monotonic())
            if missing_since[-1] - missing_since[0] > 20:
                raise Disturbed(f"the controller no longer knows {sorted(set(ids) - set(infos))}")
        else:
            missing_since.clear()
        return infos if all(j in infos and infos[j].is_terminal for j in ids) else None
    return await poll(f"jobs {list(ids)} ending", check, timeout)


async def log_exists(cluster, name: str, job_id: str) -> bool:
    res = await cluster.exec(join(["test", "-e", RemotePaths(cluster.scratch).log_file(name, job_id)]))
    return res.ok


def assert_no_orphans(final: dict[str, JobInfo]) -> None:
    assert all(j.is_terminal for j in final.values()), {k: v.state for k, v in final.items()}


def entries(cluster, strategies: list[Strategy], command: str, gid: str, name: str = "rvfault"):
    req = Request(gpus=strategies[0].total_gpus, command=command, name=name)
    return build_entries(cluster, None, req, strategies, gid, "run", name=name)


# ----------------------------------------------------------------------------- merit

async def test_same_cycle_starts_the_better_ranked_job_wins(cluster, slurm_cluster):
    """Held, then released in one call: every strategy starts in one scheduler pass; the entries
    are handed to the race worst first, yet the best-ranked one wins, twice in a row."""
    async def case() -> None:
        for _ in range(2):
            gid = new_group_id()
            marker = f"{cluster.scratch}/ran-{uuid.uuid4().hex}"
            strategies = [S("a100_80", 1, 40.0, "--hold"), S("a100_40", 1, 20.0, "--hold"),
                          S("v100", 1, 1.0, "--hold")]
            best = min(strategies, key=rank_key)

            async def release(ids: list[str]) -> str | None:
                res = await cluster.exec(join(["scontrol", "release", ",".join(ids)]))
                return None if res.ok else f"release failed: {res.stderr}"

            race = Race(cluster, entries(cluster, strategies, marker_cmd(marker, sleep=4), gid), group_id=gid,
                        store=GroupStore(), stagger=0, after_submit=release, timeout=120)
            await race.run()
            assert race.result.winner_id is not None, race.result.outcome
            final = await all_ended(cluster, race.job_ids)
            check_not_disturbed(final, race.result.winner_id)
            ran = await runs(cluster, marker)
            assert [r[0] for r in ran] == [race.result.winner_id], ran  # one run, by the winner
            assert race.result.winner.strategy.id == best.id, (race.result.winner.label, ran)
            assert final[race.result.winner_id].state == "COMPLETED"
            assert_no_orphans(final)
            started = [j for j in race.job_ids if await log_exists(cluster, "rvfault", j)]
            assert len(started) >= 2, "the release did not start several jobs together (case not exercised)"

    await attempts(case)


async def test_idle_race_best_wins_and_no_loser_is_allocated(cluster):
    async def case() -> None:
        gid = new_group_id()
        marker = f"{cluster.scratch}/ran-{uuid.uuid4().hex}"
        strategies = [S("a100_80", 1, 40.0), S("v100", 1, 1.0), S("a100_40", 1, 20.0)]
        race = Race(cluster, entries(cluster, strategies, marker_cmd(marker), gid), group_id=gid,
                    store=GroupStore(), timeout=120)
        await race.run()
        final = await all_ended(cluster, race.job_ids)
        check_not_disturbed(final, race.result.winner_id)
        best = next(j for j, e in race.by_id.items() if e.strategy.id == "v100-1x1")
        if race.result.winner_id != best and not await log_exists(cluster, "rvfault", best):
            raise Disturbed("the V100 partition was busy (another session's jobs)")
        assert race.result.winner.strategy.id == "v100-1x1"
        assert [r[0] for r in await runs(cluster, marker)] == [race.result.winner_id]
        losers_started = [j for j in race.job_ids
                          if j != race.result.winner_id and await log_exists(cluster, "rvfault", j)]
        assert losers_started == []
        assert_no_orphans(final)

    await attempts(case)


# ----------------------------------------------------------------------------- requeue

async def _requeue_and_restart(cluster, slurm_cluster, job_id: str) -> None:
    """Wait until the requeued job pends for its begin time (its first run has ended), then
    make it eligible at once instead of ~2 minutes later."""
    async def pending() -> bool:
        info = await cluster.jobs([job_id])
        return bool(info) and info[0].state == "PENDING" and info[0].reason == "BeginTime"
    await poll(f"job {job_id} requeued", pending, timeout=60)
    slurm_admin(slurm_cluster, "update", f"JobId={job_id}", "StartTime=now")


async def test_requeued_winner_runs_again_and_keeps_both_logs(cluster, slurm_cluster):
    async def case() -> None:
        gid = new_group_id()
        marker = f"{cluster.scratch}/ran-{uuid.uuid4().hex}"
        strategies = [S("v100", 1, 1.0), S("a100_40", 1, 20.0)]
        race = Race(cluster, entries(cluster, strategies, marker_cmd(marker, first_run_sleep=120), gid),
                    group_id=gid, store=GroupStore(), timeout=120)
        await race.run()
        w = race.result.winner_id
        assert w is not None
        await poll("the first run", lambda: runs(cluster, marker))
        slurm_admin(slurm_cluster, "requeue", w)
        await _requeue_and_restart(cluster, slurm_cluster, w)
        final = await all_ended(cluster, race.job_ids, timeout=120)
        check_not_disturbed(final, w)
        ran = await runs(cluster, marker)
        assert [(r[0], r[1]) for r in ran] == [(w, "0"), (w, "1")], ran  # the same job, twice
        assert final[w].state == "COMPLETED" and final[w].exit_code == 0
        out = (await cluster.read_file(RemotePaths(cluster.scratch).log_file("rvfault", w))).decode()
        assert f"race group {gid} won by job {w}" in out  # the first run's output survived
        assert out.index(f"won by job {w}") < out.index(f"restart 1 of job {w}")
        assert "already won" not in out
        assert_no_orphans(final)

    await attempts(case)


async def test_node_failure_under_the_winner_reruns_it_elsewhere(cluster, slurm_cluster):
    """The winner has a whole A100-80 node; that node goes DOWN; Slurm requeues the job and it
    runs again on the other node.  The node is restored in any case."""
    async def case() -> None:
        gid = new_group_id()
        marker = f"{cluster.scratch}/ran-{uuid.uuid4().hex}"
        strategies = [S("a100_80", 8, 1.0), S("a100_40", 1, 50.0)]
        race = Race(cluster, entries(cluster, strategies, marker_cmd(marker, first_run_sleep=120), gid),
                    group_id=gid, store=GroupStore(), timeout=120)
        await race.run()
        w = race.result.winner_id
        assert w is not None and race.result.winner.strategy.id == "a100_80-1x8"
        first = await poll("the first run", lambda: runs(cluster, marker))
        node = first[0][2]
        info = (await cluster.jobs([w]))[0]
        assert node in info.nodes  # our own job's node, whole
        try:
            slurm_admin(slurm_cluster, "update", f"NodeName={node}", "State=DOWN", "Reason=rvtest-node-fail")
            # the test cluster has ReturnToService=2 (a DOWN node is back at its next registration):
            # keep it out of service with a drain until the job has restarted elsewhere
            slurm_admin(slurm_cluster, "update", f"NodeName={node}", "State=DRAIN", "Reason=rvtest-node-fail")
            await _requeue_and_restart(cluster, slurm_cluster, w)
            final = await all_ended(cluster, race.job_ids, timeout=180)
            check_not_disturbed(final, w)
        finally:
            try:
                slurm_admin(slurm_cluster, "update", f"NodeName={node}", "State=RESUME")
            except AssertionError as exc:  # already back (ReturnToService) is fine
                if "Invalid node state" not in str(exc):
                    raise
        ran = await runs(cluster, marker)
        assert [(r[0], r[1]) for r in ran] == [(w, "0"), (w, "1")], ran
        assert ran[1][2] != node
        assert final[w].state == "COMPLETED"
        assert_no_orphans(final)

    await attempts(case)


# ----------------------------------------------------------------------------- fail closed

async def test_claim_that_cannot_be_made_fails_the_job(cluster):
    async def case() -> None:
        gid = new_group_id()
        gdir = RemotePaths(cluster.scratch).group_dir(gid)
        marker = f"{cluster.scratch}/ran-{uuid.uuid4().hex}"
        await cluster.exec(join(["mkdir", "-p", gdir]) + " && " + join(["chmod", "555", gdir]))
        ctx = JobContext(name="rvfault", command=marker_cmd(marker), scratch=cluster.scratch, group_id=gid)
        job = None
        try:
            [res] = await cluster.submit([build_submission(ctx, S("v100", 1, 1.0))])
            assert res.ok, res.error
            job = res.job_id
            final = await all_ended(cluster, [job])
            check_not_disturbed(final, job)
            assert final[job].state == "FAILED" and final[job].exit_code == CLAIM_ERROR_EXIT
            err = (await cluster.read_file(RemotePaths(cluster.scratch).log_file("rvfault", job)[:-4] + ".err")).decode()
            assert f"{gdir}/claim" in err and "Permission denied" in err and "not running the command" in err
            assert await runs(cluster, marker) == []
        finally:
            if job:
                await cluster.cancel([job])
            await cluster.exec(join(["chmod", "700", gdir]) + "; " + join(["rm", "-rf", gdir]))

    await attempts(case)


# ----------------------------------------------------------------------------- no orphans

async def test_late_sibling_is_cancelled_with_no_client_watching(cluster):
    """The winner claimed before a sibling's sbatch landed (the batch was still submitting) and no
    client publishes ``jobs`` or watches: the winner's re-scan cancels the late one."""
    async def case() -> None:
        gid = new_group_id()
        marker = f"{cluster.scratch}/ran-{uuid.uuid4().hex}"
        ctx = JobContext(name="rvfault", command=marker_cmd(marker, sleep=20), scratch=cluster.scratch, group_id=gid)
        owner = f"{RemotePaths(cluster.scratch).group_dir(gid)}/claim/owner"
        ids: list[str] = []
        try:
            [w] = await cluster.submit([build_submission(ctx, S("v100", 1, 1.0))])
            assert w.ok, w.error
            ids.append(w.job_id)

            async def claimed():
                try:
                    return (await cluster.read_file(owner)).decode().strip()
                except Exception:
                    return None
            assert await poll("the claim", claimed) == w.job_id
            # a held sibling would wait forever: only the winner can end it
            [late] = await cluster.submit([build_submission(ctx, S("a100_40", 1, 20.0, "--hold"))])
            assert late.ok, late.error
            ids.append(late.job_id)

            async def late_gone():
                info = await cluster.jobs([late.job_id])
                return info[0] if info and info[0].is_terminal else None
            gone = await poll("the late sibling cancelled", late_gone, timeout=60)
            assert gone.state == "CANCELLED" and gone.elapsed_s == 0
            final = await all_ended(cluster, ids, timeout=90)
            check_not_disturbed(final, w.job_id)
            assert final[w.job_id].state == "COMPLETED"
            assert [r[0] for r in await runs(cluster, marker)] == [w.job_id]
        finally:
            await cluster.cancel(ids)

    await attempts(case)
