"""Accounting on the real local test cluster (slurmdbd + MariaDB, MinJobAge=60, partition QOS with
the seeds' per-user GPU limits): final states and exit codes after jobs left squeue (core, the
TUI's lookup, rv ps -a, rv logs without a local record), cancelled vs timed-out told apart, a user
really holding 4 H200 gets no H200 strategy and the reason, and 16 A6000 never become a job over
max/job.

The test cluster is shared while developing: another session's ``clean_queue`` may cancel our
jobs (sacct then says "CANCELLED by 0", i.e. root); such jobs are resubmitted, never read as the
state under test."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest

from rv_tui.allocator.model import Request
from rv_tui.allocator.plan import NoStrategyError, make_plan
from rv_tui.cli.main import main as rv_main
from rv_tui.cluster.ssh import SshCluster
from rv_tui.config import load_config
from rv_tui.quoting import q

pytestmark = pytest.mark.cluster


@pytest.fixture
async def cluster(rv_home):
    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


async def rv(*argv: str) -> int:
    """The CLI in a thread (it runs its own event loop), output captured by capsys."""
    return await asyncio.to_thread(rv_main, list(argv))


async def sbatch(cluster: SshCluster, *args: str, wrap: str, cwd: str | None = None) -> str:
    cmd = " ".join(["sbatch", "--parsable", *map(q, args), "--wrap", q(wrap)])
    if cwd:
        cmd = f"cd {q(cwd)} && {cmd}"
    res = await cluster.exec(cmd)
    assert res.ok, res.stderr
    return res.stdout.strip().split(";")[0]


async def poll(what: str, fn, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        got = await fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def foreign_cancel(info) -> bool:
    """Cancelled by root (another session's clean_queue), not by this test."""
    return info.state == "CANCELLED" and (info.reason or "") == "cancelled by uid 0"


async def in_queue(cluster: SshCluster, job_id: str) -> bool:
    res = await cluster.exec(f"squeue -h -j {q(job_id)} -o %i; scontrol show job {q(job_id)}")
    return job_id in res.stdout


class _Inbox:
    """Stands in for the TUI app: lookups.final_states posts its message here."""

    def __init__(self) -> None:
        self.messages: list = []

    def post_message(self, message) -> bool:
        self.messages.append(message)
        return True


async def test_failed_job_after_it_left_squeue_core_tui_cli_and_logs(cluster, rv_home, capsys):
    from rv_tui.jobs.store import GroupJob, GroupRecord, GroupStore, utc_now_iso

    workdir = f"{cluster.scratch}/acct-{uuid.uuid4().hex[:8]}"
    assert (await cluster.exec(f"mkdir -p {q(workdir)}")).ok
    for _attempt in range(3):
        jid = await sbatch(cluster, "-J", "acct-fail", "-p", "standard", "-t", "5",
                           wrap="echo out-marker-$SLURM_JOB_ID; exit 3", cwd=workdir)
        # gone from squeue and scontrol: MinJobAge=60 plus slurmctld's purge tick (<= 60 s)
        await poll(f"job {jid} to leave the queue", lambda: _gone(cluster, jid), 200, 3)

        async def answer():
            got = await cluster.jobs([jid])
            if not got:  # say why when sacct has nothing (yet)
                hist = await cluster.history([jid])
                print("no answer yet:", hist.available, hist.note, list(hist.jobs))
            return got

        (info,) = await poll(f"sacct to answer for {jid}", answer, 30)
        if not foreign_cancel(info):
            break
    assert info.from_accounting, "the answer must come from sacct: the queue forgot the job"
    assert (info.state, info.exit_code, info.exit_signal) == ("FAILED", 3, None)
    assert info.work_dir == workdir

    # the TUI's lookup (app.lookup_final_states -> lookups.final_states) gets the same answer
    from rv_tui.tui.lookups import final_states

    inbox = _Inbox()
    await final_states(inbox, cluster, [jid])  # type: ignore[arg-type]
    (msg,) = inbox.messages
    assert [(j.job_id, j.state, j.exit_code) for j in msg.jobs] == [(jid, "FAILED", 3)]

    # rv ps -a: the group, started from "another machine" (only the record), shows it
    store = GroupStore()
    store.save(GroupRecord(id="gacct" + uuid.uuid4().hex[:6], kind="run", name="acct-fail",
                           command="exit 3", created_at=utc_now_iso(), winner=jid,
                           state="won", jobs=(GroupJob(jid, "std", "standard", "-", "standard", 1, 0),)))
    assert await rv("ps", "-a", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = [r for g in data["groups"] for r in g["jobs"] if r["job_id"] == jid]
    assert (row["state"], row["exit_code"]) == ("FAILED", 3)
    assert "history_note" not in data
    assert await rv("ps", "-a") == 0
    text = capsys.readouterr().out
    assert re.search(rf"{jid}\s+FAILED\s.*exit 3", text), text

    # rv logs of the finished job with no local record: sacct's WorkDir + Slurm's default name
    for path in (rv_home / "groups").glob("*.json"):
        path.unlink()
    assert await rv("logs", jid) == 0
    out = capsys.readouterr()
    assert f"out-marker-{jid}" in out.out, out
    await cluster.exec(f"rm -rf {q(workdir)}")


async def _gone(cluster: SshCluster, jid: str) -> bool:
    return not await in_queue(cluster, jid)


async def test_cancelled_and_timed_out_are_told_apart(cluster):
    """Real jobs: one cancelled by us, one over its 1-minute limit (OOM: no cgroup memory
    enforcement on the fake nodes, see test_accounting.test_out_of_memory_line)."""
    from rv_tui.jobs.reasons import final_text
    for _attempt in range(3):
        cancel = await sbatch(cluster, "-J", "acct-cancel", "-p", "standard", "-t", "5",
                              wrap="sleep 300")
        tmo = await sbatch(cluster, "-J", "acct-timeout", "-p", "standard", "-t", "1",
                           wrap="sleep 300")

        async def running() -> bool:
            h = await cluster.history([cancel])
            return h.jobs.get(cancel) is not None and h.jobs[cancel].state in (
                "RUNNING", "CANCELLED")

        await poll("the job to start", running, 60)
        await cluster.cancel([cancel])

        async def ended():
            h = await cluster.history([cancel, tmo])
            assert h.available, h.note
            if all(j in h.jobs and h.jobs[j].is_terminal for j in (cancel, tmo)):
                return h
            return None

        hist = await poll("both jobs to end", ended, 180, 3)
        if not foreign_cancel(hist.jobs[tmo]):
            break
        await cluster.cancel([cancel, tmo])
    c, t = hist.jobs[cancel], hist.jobs[tmo]
    assert c.state == "CANCELLED" and t.state == "TIMEOUT", (c, t)
    assert c.exit_code and t.exit_code == 124  # neither looks like success
    assert final_text(c.state, c.exit_code, c.exit_signal) == "cancelled"
    assert final_text(t.state, t.exit_code, t.exit_signal) == "hit its time limit"


async def test_user_at_h200_limit_gets_no_h200_strategy(cluster, rv_home, capsys):
    """rvtest really holds 4 H200 (four 1-GPU jobs); Slurm's QOS keeps a 5th pending on
    QOSMaxGRESPerUser, and rv excludes H200 with the reason instead of racing on it."""
    held: list[str] = []
    try:
        for _ in range(4):
            held.append(await sbatch(cluster, "-J", "acct-hold", "-p", "gpu-h200",
                                     "--gres=gpu:h200:1", "-t", "10", wrap="sleep 600"))
        extra = await sbatch(cluster, "-J", "acct-hold", "-p", "gpu-h200", "--gres=gpu:h200:1",
                             "-t", "10", wrap="sleep 600")
        held.append(extra)

        async def limited():
            res = await cluster.exec(f"squeue -h -j {q(extra)} -o %r")
            return "QOSMaxGRESPerUser" in res.stdout

        await poll("Slurm to hold the 5th H200 job on the per-user limit", limited, 30)
        with pytest.raises(NoStrategyError) as ei:
            await make_plan(cluster, Request(gpus=2, gpu_type="h200", account=cluster.user))
        why = ei.value.excluded["h200"]
        # 4 held by us (more if another session holds H200 as rvtest right now), 1+ queued
        assert re.match(r"you already use [4-9] of 4 H200 GPUs \(\+\d+ queued\)", why), why
        plan = await make_plan(cluster, Request(gpus=2, account=cluster.user))
        assert plan.strategies and all(s.gpu_type != "h200" for s in plan.strategies)
        assert plan.excluded["h200"].startswith("you already use")
        assert "cluster's per-user limit" in plan.excluded["h200"]  # read from the QOS

        assert await rv("up", "--dry-run", "-g", "2", "-t", "h200") != 0
        out = capsys.readouterr()
        assert "you already use" in out.err + out.out
        # the pending job's reason in plain words, as rv ps shows it
        assert await rv("ps", "--json") == 0
        data = json.loads(capsys.readouterr().out)
        (row,) = [r for r in data["other"] if r["job_id"] == extra]
        assert "per-user GPU limit" in row["where"]
    finally:
        await cluster.cancel(held)


async def test_sixteen_a6000_offers_no_job_over_max_per_job(cluster, capsys, rv_home):
    with pytest.raises(NoStrategyError) as ei:
        await make_plan(cluster, Request(gpus=16, gpu_type="a6000", account=cluster.user))
    assert "at most 8 GPUs per job" in ei.value.excluded["a6000"]
    plan = await make_plan(cluster, Request(gpus=8, gpu_type="a6000", account=cluster.user))
    assert plan.strategies and all(s.total_gpus == 8 for s in plan.strategies)
    assert await rv("up", "--dry-run", "-g", "16", "-t", "a6000") != 0
    out = capsys.readouterr()
    assert "per job" in out.err + out.out


def test_background_load_is_not_held_by_the_per_user_limits(cluster_load):
    """rvother stands for everyone else: 16 H200 of it run (its QOS overrides the partition
    QOS), while rvtest is held at 4 (test_user_at_h200_limit_gets_no_h200_strategy)."""
    ids = cluster_load.fill("gpu-h200", "gpu:h200:8", count=2, duration=120)
    try:
        deadline = time.monotonic() + 60
        while True:  # both run, or (nodes busy with another session's jobs) wait on Resources
            r = cluster_load.slurm("squeue", "-h", "-j", ",".join(ids), "-o", "%T %r", check=False)
            rows = [line.split() for line in r.stdout.splitlines() if line.strip()]
            assert not any("QOS" in row[-1] for row in rows), rows
            if rows and all(row[0] == "RUNNING" for row in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(rows) == 2 and all(row[0] in ("RUNNING", "PENDING") for row in rows), rows
    finally:
        cluster_load.slurm("scancel", *ids, check=False)
