"""Merit among same-cycle starts, requeue, fail-closed claims and late siblings: the job script's
claim block run for real under bash with stand-in Slurm tools (a scriptable ``squeue``), plus the
race engine's merit order and ``--begin`` stagger.

What these prove (issue 11, items 1-4):

* a job that starts while a better-ranked sibling (an earlier job id of the same group) is RUNNING
  or CONFIGURING defers to it and exits as a loser once that sibling claims; if the better one
  ends without claiming, the deferring job claims and runs;
* a requeued winner (same id, ``SLURM_RESTART_COUNT`` > 0) runs the command again and marks the
  restart in its log; a requeued loser stays a loser;
* a claim that cannot be created for any reason other than "exists" stops the job: non-zero exit,
  the path and the error on stderr, the command not run;
* siblings submitted after the winner's first scan are cancelled by its later re-scan;
* the race submits in rank order (the one rank order: :func:`rv_tui.allocator.rank.rank_key`) and
  gives every other "starts now" strategy ``--begin=now+N``.
"""
from __future__ import annotations

import asyncio

import os
import subprocess
import time
from pathlib import Path

import pytest

from rv_tui.allocator.model import StrategyKind
from rv_tui.jobs.templates import JobContext, build_script, build_submission
from test_templates import ctx_for, fake_slurm, run_script, strat  # noqa: F401  (fixture re-used)

FAKE_SQUEUE = ('#!/bin/bash\n'
               'echo "$*" >> "$FAKE/squeue.args"\n'
               '[ -f "$FAKE/squeue.txt" ] && cat "$FAKE/squeue.txt"\nexit 0\n')


@pytest.fixture
def slurm(tmp_path: Path, fake_slurm: dict[str, str]) -> dict[str, str]:  # noqa: F811
    """The shared stand-ins, with an squeue that logs its arguments."""
    p = tmp_path / "fakebin" / "squeue"
    p.write_text(FAKE_SQUEUE)
    p.chmod(0o755)
    return fake_slurm


def _script(tmp_path: Path, command: str, gid: str = "m1", **kw) -> str:
    return build_script(ctx_for(tmp_path, command, group_id=gid), strat(**kw))


def _gdir(tmp_path: Path, gid: str = "m1") -> Path:
    return tmp_path / "scratch/.rv/groups" / gid


def _squeue_calls(tmp_path: Path) -> int:
    p = tmp_path / "squeue.args"
    return len(p.read_text().splitlines()) if p.exists() else 0


def _wait_for(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


# ----------------------------------------------------------------------------- merit (item 1)

def test_started_job_defers_to_a_running_better_ranked_sibling(tmp_path: Path, slurm: dict[str, str]) -> None:
    """Job 401 starts while 400 (better ranked: submitted first) is RUNNING but has not claimed yet:
    401 must not take the claim; once 400 runs its script and claims, 401 exits as a loser."""
    marker = tmp_path / "ran"
    script = _script(tmp_path, f"echo $SLURM_JOB_ID >> {marker}")
    (tmp_path / "squeue.txt").write_text("400 rvgroup:m1 RUNNING\n401 rvgroup:m1 RUNNING\n")
    late = run_script(tmp_path, script, slurm, "401", wait=False)
    _wait_for(lambda: _squeue_calls(tmp_path) >= 2)  # it looked twice and is still waiting
    assert late.poll() is None, "401 must still be waiting for its better-ranked sibling"
    assert not (_gdir(tmp_path) / "claim").exists()
    best = run_script(tmp_path, script, slurm, "400")
    assert best.returncode == 0, best.stderr
    out, err = late.communicate(timeout=30)
    assert late.returncode == 0, err
    assert "deferring to better-ranked" in out
    assert "race group already won by job 400; exiting" in out
    assert marker.read_text().split() == ["400"]


def test_deferring_job_claims_when_the_better_sibling_ends_without_claiming(
        tmp_path: Path, slurm: dict[str, str]) -> None:
    marker = tmp_path / "ran"
    script = _script(tmp_path, f"echo $SLURM_JOB_ID >> {marker}")
    sq = tmp_path / "squeue.txt"
    sq.write_text("400 rvgroup:m1 CONFIGURING\n401 rvgroup:m1 RUNNING\n")
    late = run_script(tmp_path, script, slurm, "401", wait=False)
    _wait_for(lambda: _squeue_calls(tmp_path) >= 2)
    assert late.poll() is None and not (_gdir(tmp_path) / "claim").exists()
    sq.write_text("400 rvgroup:m1 FAILED\n401 rvgroup:m1 RUNNING\n")  # 400 died in its prolog
    out, err = late.communicate(timeout=30)
    assert late.returncode == 0, err
    assert marker.read_text().split() == ["401"]
    assert (_gdir(tmp_path) / "claim/owner").read_text().strip() == "401"


def test_no_deferral_to_worse_ranked_or_other_groups(tmp_path: Path, slurm: dict[str, str]) -> None:
    """Later ids of the group, other groups and pending siblings never delay the claim."""
    marker = tmp_path / "ran"
    (tmp_path / "squeue.txt").write_text("300 rvgroup:other RUNNING\n399 rvgroup:m1 PENDING\n"
                                         "401 rvgroup:m1 RUNNING\n402 rvgroup:m1 RUNNING\n")
    r = run_script(tmp_path, _script(tmp_path, f"echo $SLURM_JOB_ID >> {marker}"), slurm, "401")
    assert r.returncode == 0, r.stderr
    assert "deferring" not in r.stdout
    assert marker.read_text().split() == ["401"]


# ----------------------------------------------------------------------------- requeue (item 2)

def test_requeued_winner_runs_again_and_marks_the_restart(tmp_path: Path, slurm: dict[str, str]) -> None:
    marker = tmp_path / "ran"
    script = _script(tmp_path, f'echo "$SLURM_JOB_ID ${{SLURM_RESTART_COUNT:-0}}" >> {marker}')
    first = run_script(tmp_path, script, slurm, "500")
    assert first.returncode == 0, first.stderr
    again = run_script(tmp_path, script, slurm, "500", SLURM_RESTART_COUNT="1")
    assert again.returncode == 0, again.stderr
    assert "already won" not in again.stdout
    assert "restart 1 of job 500" in again.stdout and "restart 1 of job 500" in again.stderr
    assert marker.read_text().splitlines() == ["500 0", "500 1"]
    # the segments list names the owner once, not once per run
    assert (_gdir(tmp_path) / "segments").read_text().split() == ["500"]


def test_requeued_loser_stays_a_loser(tmp_path: Path, slurm: dict[str, str]) -> None:
    marker = tmp_path / "ran"
    script = _script(tmp_path, f"echo $SLURM_JOB_ID >> {marker}")
    assert run_script(tmp_path, script, slurm, "510").returncode == 0
    lost = run_script(tmp_path, script, slurm, "511", SLURM_RESTART_COUNT="2")
    assert lost.returncode == 0, lost.stderr
    assert "already won by job 510" in lost.stdout
    assert marker.read_text().split() == ["510"]


def test_sbatch_appends_logs() -> None:
    sub = build_submission(JobContext(name="x", command="true", scratch="/s", group_id="g"), strat())
    assert "#SBATCH --open-mode=append" in sub.script
    multi = build_script(JobContext(name="x", command="true", scratch="/s", group_id="g"), strat(nodes=2))
    assert "--open-mode=append" in multi.split("_rv_run srun", 1)[1].splitlines()[0]


# ----------------------------------------------------------------------------- fail closed (item 3)

FAILING_MKDIR = ('#!/bin/bash\n'
                 'for a in "$@"; do case "$a" in */claim) echo "mkdir: cannot create directory \'$a\': '
                 'Stale file handle" >&2; exit 1 ;; esac; done\n'
                 'exec /bin/mkdir "$@"\n')


def test_claim_error_other_than_exists_fails_closed(tmp_path: Path, slurm: dict[str, str]) -> None:
    p = tmp_path / "fakebin" / "mkdir"
    p.write_text(FAILING_MKDIR)
    p.chmod(0o755)
    marker = tmp_path / "ran"
    r = run_script(tmp_path, _script(tmp_path, f"echo $SLURM_JOB_ID >> {marker}"), slurm, "520")
    assert r.returncode != 0
    claim = f"{_gdir(tmp_path)}/claim"
    assert claim in r.stderr and "Stale file handle" in r.stderr
    assert not marker.exists()
    assert not (tmp_path / "scancel.log").exists()  # a job that did not win cancels nobody


def test_group_dir_that_cannot_be_made_fails_closed(tmp_path: Path, slurm: dict[str, str]) -> None:
    gdir = _gdir(tmp_path)
    gdir.parent.mkdir(parents=True)
    gdir.write_text("not a directory")
    marker = tmp_path / "ran"
    r = run_script(tmp_path, _script(tmp_path, f"echo $SLURM_JOB_ID >> {marker}"), slurm, "521")
    assert r.returncode != 0 and str(gdir) in r.stderr
    assert not marker.exists()


def test_claim_without_a_readable_owner_fails_closed(tmp_path: Path, slurm: dict[str, str]) -> None:
    """A claim directory whose owner never appears (its maker died): do not run, say so, non-zero."""
    (_gdir(tmp_path) / "claim").mkdir(parents=True)
    marker = tmp_path / "ran"
    r = run_script(tmp_path, _script(tmp_path, f"echo $SLURM_JOB_ID >> {marker}"), slurm, "522")
    assert r.returncode != 0
    assert f"{_gdir(tmp_path)}/claim/owner" in r.stderr
    assert not marker.exists()


# ----------------------------------------------------------------------------- late siblings (item 4)

def test_winner_rescans_for_late_siblings(tmp_path: Path, slurm: dict[str, str]) -> None:
    """Siblings that land after the winner's first scan (the batch was still submitting) are
    cancelled by the winner itself, with no client watching."""
    sq = tmp_path / "squeue.txt"
    sq.write_text("530 rvgroup:m1 RUNNING\n")
    p = run_script(tmp_path, _script(tmp_path, "sleep 6"), slurm, "530", wait=False)
    _wait_for(lambda: (_gdir(tmp_path) / "claim/owner").exists())
    time.sleep(0.3)
    sq.write_text("530 rvgroup:m1 RUNNING\n531 rvgroup:m1 PENDING\n532 rvgroup:m1 PENDING\n")
    _wait_for(lambda: (tmp_path / "scancel.log").exists()
              and {"531", "532"} <= set((tmp_path / "scancel.log").read_text().split()), timeout=15)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "530" not in (tmp_path / "scancel.log").read_text().split()


def test_winner_of_a_short_command_scans_once_more_at_exit(tmp_path: Path, slurm: dict[str, str]) -> None:
    sq = tmp_path / "squeue.txt"
    sq.write_text("540 rvgroup:m1 RUNNING\n")
    flip = f"printf '540 rvgroup:m1 RUNNING\\n541 rvgroup:m1 PENDING\\n' > {sq}"
    r = run_script(tmp_path, _script(tmp_path, flip), slurm, "540")
    assert r.returncode == 0, r.stderr
    assert "541" in (tmp_path / "scancel.log").read_text().split()


# ----------------------------------------------------------------------------- the race's order (item 1)

def _rs(sid: str, su: float, wait: float = 0.0, nodes: int = 1):
    from rv_tui.allocator.model import Strategy
    return Strategy(id=sid, label=sid, gpu_type="a6000", partition="gpu-a6000", nodes=nodes,
                    gpus_per_node=1, kind=StrategyKind.BACKFILL, walltime_s=600, time_min_s=None,
                    est_wait_s=wait, est_su=su, mem="8G", cpus_per_task=1, constraint=None,
                    total_time_s=600)


class _Recorder:
    """Just enough of a Cluster to see what the race submits (every sbatch refused)."""

    name = user = "rec"
    scratch = "/scratch/rec"
    is_demo = False

    def __init__(self) -> None:
        self.submitted: list = []

    async def exec(self, command: str, *, timeout: float | None = None):
        from rv_tui.cluster.base import ExecResult
        return ExecResult(command, 0, "", "")

    async def submit(self, subs):
        from rv_tui.cluster.base import SubmitResult
        self.submitted = list(subs)
        return [SubmitResult(s, None, "refused") for s in subs]


async def test_race_submits_in_rank_order_and_staggers_the_other_instant_starts() -> None:
    from rv_tui.allocator.race import Race, RaceEntry
    from rv_tui.allocator.rank import rank_key

    ctx = JobContext(name="x", command="true", scratch="/scratch/rec", group_id="ord1")
    strategies = [_rs("dear", 40.0), _rs("queued", 1.0, wait=4000), _rs("cheap", 2.0),
                  _rs("cheap-2n", 2.0, nodes=2), _rs("mid", 9.0, wait=30)]
    rec = _Recorder()
    race = Race(rec, [RaceEntry(build_submission(ctx, s), s) for s in strategies], group_id="ord1")  # type: ignore[arg-type]
    await race.run()
    order = [sub.meta["strategy_id"] for sub in rec.submitted]
    assert order == [s.id for s in sorted(strategies, key=rank_key)]
    assert order == ["cheap", "cheap-2n", "mid", "dear", "queued"]
    begins = {sub.meta["strategy_id"]: sub.meta.get("begin_delay_s") for sub in rec.submitted}
    # only the best "starts now" strategy is eligible at once
    assert begins == {"cheap": None, "cheap-2n": 2, "mid": 2, "dear": 2, "queued": 2}
    for sub in rec.submitted:
        has = "#SBATCH --begin=now+2\n" in sub.script
        assert has == (begins[sub.meta["strategy_id"]] is not None)
        assert subprocess.run(["bash", "-n"], input=sub.script, capture_output=True, text=True).returncode == 0


async def test_when_nothing_starts_now_the_best_ranked_is_eligible_at_once() -> None:
    from rv_tui.allocator.race import RaceEntry, merit_order

    ctx = JobContext(name="x", command="true", scratch="/s", group_id="ord3")
    es = [RaceEntry(build_submission(ctx, s), s) for s in (_rs("late", 1.0, wait=9000), _rs("soon", 5.0, wait=400))]
    got = merit_order(es)
    assert [e.strategy.id for e in got] == ["soon", "late"]  # 5-minute wait buckets first
    assert [e.submission.meta.get("begin_delay_s") for e in got] == [None, 2]
    assert [e.strategy.id for e in merit_order(es, stagger=0)] == ["soon", "late"]
    assert all("--begin" not in e.submission.script for e in merit_order(es, stagger=0))


async def test_race_without_strategies_keeps_the_given_order() -> None:
    from rv_tui.allocator.race import Race, RaceEntry

    ctx = JobContext(name="x", command="true", scratch="/scratch/rec", group_id="ord2")
    subs = [build_submission(ctx, _rs(i, su)) for i, su in (("b", 5.0), ("a", 1.0))]
    rec = _Recorder()
    await Race(rec, [RaceEntry(s) for s in subs], group_id="ord2").run()  # type: ignore[arg-type]
    assert [s.meta["strategy_id"] for s in rec.submitted] == ["b", "a"]
    assert all("--begin" not in s.script for s in rec.submitted)


async def test_demo_race_best_instant_start_wins_and_the_others_never_start(tmp_path: Path, monkeypatch) -> None:
    """The demo cluster plays the same stagger: the best "starts now" strategy wins and the
    staggered ones are cancelled while still waiting for their begin time."""
    monkeypatch.setenv("RV_HOME", str(tmp_path / "rv-home"))
    from rv_tui.allocator.model import Request
    from rv_tui.allocator.plan import make_plan
    from rv_tui.allocator.race import STARTS_NOW_S, Race
    from rv_tui.allocator.rank import rank_key
    from rv_tui.cluster.demo import DemoCluster
    from rv_tui.jobs.launch import build_entries
    from rv_tui.jobs.store import new_group_id

    cluster = DemoCluster(seed=11, speed=60)
    try:
        req = Request(gpus=1, time_s=1800, command="python train.py")
        plan = await make_plan(cluster, req)
        instant = [s for s in plan.strategies if s.est_wait_s <= STARTS_NOW_S]
        assert len(instant) >= 2, [(s.id, s.est_wait_s) for s in plan.strategies]
        gid = new_group_id()
        race = Race(cluster, build_entries(cluster, None, req, list(plan.strategies), gid), group_id=gid,
                    timeout=600)
        await race.run()
        best = min(instant, key=rank_key)
        assert race.result.winner is not None and race.result.winner.strategy.id == best.id
        await cluster.jobs(race.job_ids)  # let the simulation catch up
        started_losers = [j for j in race.job_ids
                          if j != race.result.winner_id and cluster.sim.jobs[int(j)].start is not None]
        assert started_losers == []
    finally:
        await cluster.close()


async def test_demo_requeued_winner_runs_again_and_a_requeued_loser_stays_a_loser(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RV_HOME", str(tmp_path / "rv-home"))
    from rv_tui.allocator.race import Race, RaceEntry
    from rv_tui.cluster.demo import DemoCluster
    from rv_tui.paths import RemotePaths

    cluster = DemoCluster(seed=5, speed=0)
    try:
        ctx = JobContext(name="rq", command="python train.py", scratch=cluster.scratch, group_id="rqdemo")
        strategies = [_rs("a", 1.0), _rs("b", 2.0)]
        strategies = [replace_gpu(s, t) for s, t in zip(strategies, ("mig", "mig"))]
        race = Race(cluster, [RaceEntry(build_submission(ctx, s), s) for s in strategies], group_id="rqdemo",
                    stagger=0, poll_interval=0.01, timeout=30)
        task = asyncio.ensure_future(race.run())
        while not task.done():
            cluster.advance(0.5)
            await asyncio.sleep(0)
        await task
        w = race.result.winner_id
        assert w is not None
        loser = next(j for j in race.job_ids if j != w)
        sim = cluster.sim
        assert sim.requeue(int(w))
        sim.requeue(int(loser))  # a cancelled loser cannot be requeued; one that ran stays a loser
        cluster.advance(3600)
        [info] = await cluster.jobs([w])
        assert info.restart_count == 1 and info.state in ("COMPLETED", "FAILED")
        out = (await cluster.read_file(RemotePaths(cluster.scratch).log_file("rq", w))).decode()
        assert f"claimed by job {w}" in out  # the first run's output is kept
        assert out.index(f"claimed by job {w}") < out.index(f"restart 1 of job {w}")
        assert "DUE TO JOB REQUEUE" in (await cluster.read_file(
            RemotePaths(cluster.scratch).log_file("rq", w, "err"))).decode()
        [linfo] = await cluster.jobs([loser])
        if linfo.restart_count:
            lout = (await cluster.read_file(RemotePaths(cluster.scratch).log_file("rq", loser))).decode()
            assert "already won" in lout and "claimed by" not in lout
    finally:
        await cluster.close()


def replace_gpu(s, gpu_type: str):
    from dataclasses import replace
    from rv_tui.gpus import GPU_SPECS
    return replace(s, gpu_type=gpu_type, partition=GPU_SPECS[gpu_type].partition, id=f"{s.id}-{gpu_type}")
