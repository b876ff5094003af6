"""The demo cluster behaves like Slurm where rv can see it, deterministically.

Most tests freeze the clock (``speed=0``) and step it with ``advance``; scheduler tests that need
exact numbers turn the background workload off and place other users' jobs by hand.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from rv_tui.cluster.base import Cluster, JobSubmission, ProbeSpec
from rv_tui.cluster.demo import DEMO_NOTICE, DemoCluster
from rv_tui.cluster.demo.sim import ERR_NODE_CONFIG, ERR_QOS, ERR_TIME_LIMIT
from rv_tui.cluster.demo.workload import BgJob
from rv_tui.gpus import GPU_SPECS

LOGS = "/scratch/demo1a/.rv/logs"


def sub(partition: str = "gpu-a6000", gpu_type: str = "a6000", *, nodes: int = 1, gpus: int = 4,
        walltime: int = 10740, command: str | None = "python train.py", name: str = "rv-test",
        **kw) -> JobSubmission:
    return JobSubmission(script="#!/bin/bash\n", name=name, partition=partition, nodes=nodes,
                         gpus_per_node=gpus, gpu_type=gpu_type, walltime_s=walltime, command=command,
                         stdout_path=f"{LOGS}/%x-%j.out", stderr_path=f"{LOGS}/%x-%j.err", **kw)


def other_job(cluster: DemoCluster, pool: str, gpus: int, *, run_s: float, limit: int | None = None,
              running: bool = True, nodes: int = 1, age_s: float = 3600.0) -> int:
    """Place another user's job by hand (running now, or pending since *age_s* ago)."""
    sim = cluster.sim
    spec = GPU_SPECS[pool]
    node = sim.pool_nodes[pool][0]
    bg = BgJob(user=f"xyz{sim.next_id % 1000}q", name="ml-train", partition=spec.partition, nodes=nodes,
               gpus_per_node=gpus, cpus_per_node=node.cpus * gpus // node.gpus,
               mem_per_node=int(node.mem * gpus / node.gpus * 0.9), limit_s=limit or int(run_s),
               run_s=run_s, prio_bonus=0.0, exit_code=0)
    if running:
        job = sim._add_background(pool, bg, sim.t, elapsed=0.0)
        assert job is not None, "no room for the hand-placed job"
    else:
        job = sim._add_background(pool, bg, sim.t - age_s)
        assert job is not None
    sim._schedule()
    return job.id


async def job(cluster: DemoCluster, job_id: str):
    [info] = await cluster.jobs([job_id])
    return info


async def text(cluster: DemoCluster, path: str) -> str:
    return (await cluster.read_file(path)).decode()


def quiet() -> DemoCluster:
    return DemoCluster(seed=1, speed=0, background=False)


# --------------------------------------------------------------------------- basics

def test_is_a_cluster_and_says_so() -> None:
    c = DemoCluster(seed=1, speed=0)
    assert isinstance(c, Cluster)
    assert c.is_demo and c.name == "demo" and c.user == "demo1a" and c.scratch == "/scratch/demo1a"
    assert "demo cluster" in DEMO_NOTICE


async def test_seeded_runs_are_deterministic() -> None:
    a, b, other = (DemoCluster(seed=s, speed=0) for s in (7, 7, 8))
    for c in (a, b, other):
        c.advance(2 * 3600)
    ja, jb, jo = [await c.jobs(all_users=True) for c in (a, b, other)]
    assert ja == jb
    assert ja != jo
    assert (await a.snapshot()) == (await b.snapshot())
    now = await a.now()
    assert now.tzinfo is not None and str(now.tzinfo) == "America/New_York"
    assert now.isoformat() == "2026-11-23T11:00:00-05:00"


async def test_warm_start_looks_lived_in() -> None:
    c = DemoCluster(seed=3, speed=0)
    snap = await c.snapshot()
    states = {n.state for n in snap.nodes}
    assert {"mixed", "allocated"} & states and "drained" in states
    assert sum(n.gpus_used for n in snap.nodes) > 0.4 * sum(n.gpus_total for n in snap.nodes)
    assert sum(q.running_jobs for q in snap.queues.values()) > 30
    assert set(snap.queues) >= {"gpu", "gpu-mig", "gpu-a6000", "gpu-a100-80", "gpu-h200", "standard"}
    others = await c.jobs(all_users=True)
    assert {j.user for j in others} - {"demo1a"}
    assert all(len(j.job_id) == 7 for j in others)
    assert await c.jobs() == []  # the demo user starts with nothing
    # the shared gpu partition spans the big types; each node is listed once
    names = [n.name for n in snap.nodes]
    assert len(names) == len(set(names))
    gpu_types = {a.gpu_type for a in snap.availability() if a.partition == "gpu"}
    assert gpu_types == {"a6000", "a40", "a100_40", "a100_80", "v100", "h200"}


async def test_scarce_types_busier_than_plentiful_ones_over_a_day() -> None:
    c = DemoCluster(seed=5, speed=0)
    free = {"a6000": 0.0, "v100": 0.0, "a100_80": 0.0, "h200": 0.0, "mig": 0.0}
    for _ in range(48):
        c.advance(1800)
        fb = (await c.snapshot()).free_by_type()
        for t in free:
            free[t] += fb[t][0] / fb[t][1] / 48
    assert free["a100_80"] < free["a6000"] and free["h200"] < free["a6000"]
    assert free["h200"] < free["v100"]
    assert free["mig"] > 0.4


# --------------------------------------------------------------------------- scheduling

async def test_job_on_free_partition_starts_now() -> None:
    c = quiet()
    [res] = await c.submit([sub()])
    assert res.ok and len(res.job_id) == 7 and int(res.job_id) >= 1000001
    info = await job(c, res.job_id)
    assert info.state == "RUNNING" and info.has_started
    assert info.start_time == await c.now()
    assert len(info.nodes) == 1 and info.gres == "gpu:a6000:4"
    assert info.stdout_path == f"{LOGS}/rv-test-{res.job_id}.out"
    snap = await c.snapshot()
    [node] = [n for n in snap.nodes if n.name == info.nodes[0]]
    assert node.gpus_used == 4 and node.state == "mixed"
    assert snap.queues["gpu-a6000"].running_jobs == 1


async def test_pending_job_starts_at_its_estimate() -> None:
    c = quiet()
    for i in range(4):  # every H200 node busy for exactly one more hour
        other_job(c, "h200", 8, run_s=3600 + 0 * i, limit=7200)
    t0 = await c.now()
    [res] = await c.submit([sub("gpu-h200", "h200", gpus=4)])
    info = await job(c, res.job_id)
    assert info.state == "PENDING" and info.reason == "Resources"
    assert info.start_time == t0 + timedelta(hours=1)
    [probe] = await c.test_only([ProbeSpec("gpu-h200", "gpu:h200:4", 10740)])
    assert probe.start == info.start_time
    c.advance(3599)
    assert (await job(c, res.job_id)).state == "PENDING"
    c.advance(1)
    info = await job(c, res.job_id)
    assert info.state == "RUNNING" and info.start_time == t0 + timedelta(hours=1)


async def test_priority_reason_and_backfill_respects_reservation() -> None:
    c = quiet()
    for _ in range(4):
        other_job(c, "h200", 4, run_s=3600, limit=7200)  # half of every node until +1h
    for _ in range(4):
        other_job(c, "h200", 4, run_s=20 * 3600, limit=86400)  # other half for 20 h
    # an older 8-GPU job waits for a whole node (+20 h) and reserves it
    big = other_job(c, "h200", 8, run_s=3600, limit=3600, running=False, age_s=7200)
    [res_long, res_short] = await c.submit([
        sub("gpu-h200", "h200", gpus=4, walltime=2 * 86400),
        sub("gpu-h200", "h200", gpus=2, walltime=1800, command="sleep infinity"),
    ])
    t0 = await c.now()
    assert (await job(c, str(big))).reason == "Resources"
    long_info = await job(c, res_long.job_id)
    assert long_info.state == "PENDING" and long_info.reason == "Priority"
    assert long_info.start_time == t0 + timedelta(hours=1)  # fits beside the big reservation
    c.advance(3600)
    assert (await job(c, res_long.job_id)).state == "RUNNING"


async def test_time_min_starts_now_with_a_shorter_limit() -> None:
    c = quiet()
    for _ in range(3):
        other_job(c, "h200", 8, run_s=10 * 3600, limit=86400)
    other_job(c, "h200", 4, run_s=3600, limit=3600)  # last node: half busy until +1h
    other_job(c, "h200", 8, run_s=3600, limit=3600, running=False, age_s=7200)  # reserves it at +1h
    [plain, with_min] = await c.submit([
        sub("gpu-h200", "h200", gpus=2, walltime=10740, name="plain"),
        sub("gpu-h200", "h200", gpus=2, walltime=10740, time_min_s=1800, name="timemin"),
    ])
    assert (await job(c, plain.job_id)).state == "PENDING"
    info = await job(c, with_min.job_id)
    assert info.state == "RUNNING"
    assert 1800 <= info.time_limit_s <= 3600


async def test_time_limit_gives_timeout() -> None:
    c = quiet()
    [res] = await c.submit([sub(command="sleep infinity", walltime=600)])
    c.advance(599)
    assert (await job(c, res.job_id)).state == "RUNNING"
    c.advance(2)
    info = await job(c, res.job_id)
    assert info.state == "TIMEOUT" and info.is_terminal and info.elapsed_s == 600
    assert "DUE TO TIME LIMIT" in await text(c, info.stderr_path)
    assert (await c.snapshot()).free_by_type()["a6000"] == (80, 80)


async def test_commands_complete_or_fail() -> None:
    c = quiet()
    ok, bad = await c.submit([sub(name="ok"), sub(command="python fail.py", name="bad")])
    c.advance(3600)
    ok_info, bad_info = await c.jobs([ok.job_id, bad.job_id])
    assert (ok_info.state, ok_info.exit_code) == ("COMPLETED", 0)
    assert 60 < ok_info.elapsed_s < 900
    assert (bad_info.state, bad_info.exit_code) == ("FAILED", 1)
    assert "Traceback (most recent call last):" in await text(c, bad_info.stderr_path)
    out = await text(c, ok_info.stdout_path)
    assert "loss" in out and "\r" in out and "[rv] command: python train.py" in out
    assert await c.jobs() == []  # finished jobs leave the queue but stay answerable by id


async def test_interactive_allocation_runs_until_cancelled() -> None:
    c = quiet()
    [res] = await c.submit([sub(command=None, walltime=7200)])
    c.advance(3000)
    assert (await job(c, res.job_id)).state == "RUNNING"
    await c.cancel([res.job_id])
    info = await job(c, res.job_id)
    assert info.state == "CANCELLED" and info.elapsed_s == 3000
    await c.cancel([res.job_id, "9999999", "junk"])  # finished/unknown ids are not an error


async def test_cancel_pending_and_running_frees_gpus() -> None:
    c = quiet()
    for _ in range(4):
        other_job(c, "h200", 8, run_s=3600)
    running, pending = await c.submit([sub(), sub("gpu-h200", "h200", gpus=1)])
    assert (await job(c, pending.job_id)).state == "PENDING"
    await c.cancel([running.job_id, pending.job_id])
    a, b = await c.jobs([running.job_id, pending.job_id])
    assert a.state == b.state == "CANCELLED"
    assert (await c.snapshot()).free_by_type()["a6000"] == (80, 80)
    assert await c.jobs() == []


async def test_mig_starts_at_once_on_a_busy_cluster() -> None:
    for seed in (1, 2, 3):
        c = DemoCluster(seed=seed, speed=0)
        c.advance(6 * 3600)
        [res] = await c.submit([sub("gpu-mig", "mig", gpus=1)])
        assert (await job(c, res.job_id)).state == "RUNNING"


# --------------------------------------------------------------------------- probes and shapes

async def test_invalid_shapes_are_rejected_like_sbatch() -> None:
    c = DemoCluster(seed=1, speed=0)
    probes = await c.test_only([
        ProbeSpec("gpu-a6000", "gpu:a6000:9", 3600),  # more than a node has
        ProbeSpec("gpu-a6000", "gpu:a6000:4", 4 * 86400),  # above MaxTime
        ProbeSpec("interactive-rtx3090", "gpu:rtx3090:1", 13 * 3600),  # above 12 h
        ProbeSpec("gpu-h200", "gpu:h200:8", 3600),  # above the per-job limit
        ProbeSpec("gpu-a6000", "gpu:h200:1", 3600),  # type not in the partition
        ProbeSpec("gpu-nope", "gpu:a6000:1", 3600),
        ProbeSpec("gpu-v100", "gpu:v100:4", 3600, nodes=7),  # more nodes than exist
    ])
    errors = [p.error for p in probes]
    assert all(p.start is None for p in probes)
    assert errors[:6] == [ERR_NODE_CONFIG, ERR_TIME_LIMIT, ERR_TIME_LIMIT, ERR_QOS, ERR_NODE_CONFIG,
                          "sbatch: error: invalid partition specified: gpu-nope"]
    assert errors[6] in (ERR_NODE_CONFIG, ERR_QOS)
    results = await c.submit([sub(gpus=9), sub(walltime=4 * 86400), sub("gpu-h200", "h200", gpus=8),
                              sub(gpu_type="nonsense")])
    assert [r.ok for r in results] == [False] * 4
    assert results[0].error == ERR_NODE_CONFIG and results[1].error == ERR_TIME_LIMIT
    assert results[2].error == ERR_QOS


async def test_probe_agrees_with_submit() -> None:
    c = DemoCluster(seed=11, speed=0)
    c.advance(3600)
    shapes = [("gpu-a6000", "a6000", 1, 4), ("gpu-a100-80", "a100_80", 1, 8), ("gpu", "a100_80", 2, 4),
              ("gpu-h200", "h200", 1, 4), ("gpu-a40", "a40", 1, 8), ("gpu-v100", "v100", 1, 4)]
    for part, gtype, nodes, gpus in shapes:
        spec = GPU_SPECS[gtype]
        [probe] = await c.test_only([ProbeSpec(part, spec.gres(gpus), 10740, nodes=nodes,
                                               constraint=spec.constraint)])
        assert probe.error is None and probe.start is not None
        [res] = await c.submit([sub(part, gtype, nodes=nodes, gpus=gpus)])
        info = await job(c, res.job_id)
        assert info.start_time == probe.start, (part, gtype, info)
        assert info.has_started == (probe.start == await c.now())
        await c.cancel([res.job_id])


async def test_pending_estimates_stay_ahead_of_the_clock_on_a_busy_cluster() -> None:
    """On a busy pool the estimate moves (as Slurm's does) but is always a future time, the reason
    is Slurm's, and the job starts once its turn comes."""
    c = DemoCluster(seed=4, speed=0)
    c.advance(1800)
    [res] = await c.submit([sub("gpu-a100-80", "a100_80", gpus=8)])
    info = await job(c, res.job_id)
    assert info.state == "PENDING"
    for _ in range(400):
        now = await c.now()
        assert info.reason in ("Resources", "Priority")
        assert info.start_time is not None and info.start_time >= now
        c.advance(300)
        info = await job(c, res.job_id)
        if info.state != "PENDING":
            break
    assert info.state == "RUNNING"


# --------------------------------------------------------------------------- races

async def test_race_group_has_exactly_one_runner_without_a_client() -> None:
    c = quiet()
    for _ in range(6):
        other_job(c, "v100", 4, run_s=7200)  # v100 full: the third sibling waits
    subs = [sub(name="race", group_id="g1"), sub("gpu", "a6000", name="race", group_id="g1"),
            sub("gpu-v100", "v100", name="race", group_id="g1")]
    ids = [r.job_id for r in await c.submit(subs)]
    c.advance(30)  # nobody looks in between
    a, b, v = await c.jobs(ids)
    assert a.state == "RUNNING"
    assert b.state in ("COMPLETED", "CANCELLED") and b.exit_code == 0
    assert v.state == "CANCELLED"
    runners = [i for i in (a, b) if "[rv] command:" in await text(c, i.stdout_path)]
    assert runners == [a]
    assert f"race group already won by job {a.job_id}; exiting" in await text(c, b.stdout_path)
    assert (await c.read_file("/scratch/demo1a/.rv/groups/g1/claim/owner")).decode().strip() == a.job_id


async def test_race_sibling_pending_elsewhere_is_cancelled_within_a_second() -> None:
    c = quiet()
    for _ in range(4):
        other_job(c, "h200", 8, run_s=600)
    [late] = await c.submit([sub("gpu-h200", "h200", gpus=4, group_id="g2")])
    [win] = await c.submit([sub(group_id="g2")])
    c.advance(1)
    assert (await job(c, late.job_id)).state == "CANCELLED"
    assert (await job(c, win.job_id)).state == "RUNNING"


# --------------------------------------------------------------------------- logs

async def test_multi_node_logs_stream_per_node_and_interleave() -> None:
    c = quiet()
    for _ in range(4):
        other_job(c, "h200", 8, run_s=120)
    [res] = await c.submit([sub("gpu-h200", "h200", nodes=2, gpus=2, walltime=3600 * 3,
                                name="mn")])
    # H200's per-job limit is 4: a 2x2 job is allowed; it waits two minutes for nodes
    assert (await job(c, res.job_id)).state == "PENDING"
    jid = res.job_id
    paths = [f"{LOGS}/mn-{jid}.node{n}.{s}" for n in (0, 1) for s in ("out", "err")]
    paths.append(f"{LOGS}/mn-{jid}.out")
    got: list[tuple[str, str]] = []

    async def driver() -> None:
        for _ in range(2000):
            c.advance(5)
            await asyncio.sleep(0.002)

    task = asyncio.create_task(driver())
    stream = c.stream_files(paths)
    try:
        async with asyncio.timeout(60):
            async for fl in stream:
                got.append((fl.path, fl.line))
                ranks = [p for p, line in got if "] epoch 1/" in line and "step" in line]
                if any(p.endswith("node0.out") for p in ranks) and any(p.endswith("node1.out") for p in ranks):
                    break
    finally:
        await stream.aclose()
        task.cancel()
    files = {p for p, _ in got}
    assert {f"{LOGS}/mn-{jid}.node0.out", f"{LOGS}/mn-{jid}.node1.out", f"{LOGS}/mn-{jid}.out"} <= files
    assert any(line.startswith("[rv] job") for p, line in got if p.endswith(f"mn-{jid}.out"))
    order = [p for p, _ in got if ".node" in p and p.endswith(".out")]
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    assert switches >= 2  # node0 and node1 lines interleave in time
    info = await job(c, jid)
    assert len(info.nodes) == 2 and info.num_nodes == 2


async def test_stream_from_end_and_files_that_appear_late() -> None:
    c = quiet()
    await c.write_file("/scratch/demo1a/a.log", "old\n", 0o644)
    stream = c.stream_files(["/scratch/demo1a/a.log", "/scratch/demo1a/b.log"], from_start=False)
    got: list[str] = []

    async def writer() -> None:
        await asyncio.sleep(0.05)
        c.sim.fs.append_line("/scratch/demo1a/a.log", "new-a")
        c.sim.fs.append_line("/scratch/demo1a/b.log", "late-b")

    task = asyncio.create_task(writer())
    async with asyncio.timeout(10):
        async for fl in stream:
            got.append(fl.line)
            if len(got) == 2:
                break
    await stream.aclose()
    await task
    assert got == ["new-a", "late-b"]


# --------------------------------------------------------------------------- checkpoint

async def test_checkpoint_chain_resubmits_until_total() -> None:
    c = quiet()
    [res] = await c.submit([sub(walltime=3600, checkpoint_total_s=7200, command="python train.py",
                                name="ckpt")])
    chain = [res.job_id]
    for _ in range(40):
        c.advance(600)
        last = await job(c, chain[-1])
        if last.is_terminal:
            out = await text(c, last.stdout_path)
            nxt = [line.split()[-1] for line in out.splitlines() if line.startswith("Submitted batch job")]
            if not nxt:
                break
            chain.append(nxt[0])
    assert len(chain) == 3
    infos = await c.jobs(chain)
    assert [i.state for i in infos] == ["COMPLETED"] * 3
    first = await text(c, infos[0].stdout_path)
    assert "[rv] SIGUSR1: checkpointing" in first and "RV_TOTAL_ELAPSED=3005" in first
    assert infos[0].elapsed_s == 3005  # SIGUSR1 at walltime - 10 min, then 5 s to save
    second = await text(c, infos[1].stdout_path)
    assert "RV_TOTAL_ELAPSED=3005 of 7200" in second
    last_out = await text(c, infos[2].stdout_path)
    assert "total time reached" in last_out and "[rv] SIGUSR1: checkpointing" not in last_out
    assert sum(i.elapsed_s for i in infos) == pytest.approx(7200, abs=2)


# --------------------------------------------------------------------------- files and exec

async def test_files_and_tiny_shell() -> None:
    c = quiet()
    await c.write_file("/scratch/demo1a/.rv/env/vars.env", "export A='1'\n", 0o600)
    assert await c.read_file("/scratch/demo1a/.rv/env/vars.env") == b"export A='1'\n"
    assert c.sim.fs.files["/scratch/demo1a/.rv/env/vars.env"].mode == 0o600
    with pytest.raises(FileNotFoundError):
        await c.read_file("/scratch/demo1a/missing")
    r = await c.exec("cat /scratch/demo1a/.rv/env/vars.env 2>/dev/null || true")
    assert r.ok and r.stdout == "export A='1'\n"
    r = await c.exec("mkdir -p -m 700 '/scratch/demo1a/.rv/groups/x' && echo ok")
    assert r.ok and r.stdout == "ok\n"
    assert (await c.exec("hostname")).stdout.strip()
    assert (await c.exec("date +%Y")).stdout == "2026\n"
    r = await c.exec("nvidia-smi")
    assert r.exit_status == 127 and "demo cluster: command not available" in r.stderr
    r = await c.exec("echo $(id) | sh")
    assert r.exit_status == 127


async def test_race_tie_goes_to_the_first_submitted_sibling() -> None:
    """Siblings that start in the same instant claim in job-id order (the allocator's best first),
    whatever partition or pool the scheduler looks at first."""
    c = quiet()
    ids = [r.job_id for r in await c.submit([sub("gpu-v100", "v100", name="r", group_id="g3"),
                                             sub("gpu-a6000", "a6000", name="r", group_id="g3")])]
    c.advance(5)
    first, second = await c.jobs(ids)
    assert first.state == "RUNNING" and second.state in ("COMPLETED", "CANCELLED")
    assert (await c.read_file("/scratch/demo1a/.rv/groups/g3/claim/owner")).decode().strip() == ids[0]
