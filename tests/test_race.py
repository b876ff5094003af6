"""The shared race suite: the same tests on the real local Slurm cluster (SshCluster over asyncssh)
and on the demo cluster.  Both backends must pass.

What they prove: strategies are submitted as one group; with some partitions full the first job to
start wins; exactly one job runs the command (checked from what the command itself left behind);
every other job ends cancelled or exits as a loser; nothing of the group stays pending; two jobs
starting in the same scheduler cycle still run the command once; and (real cluster) a client
killed with SIGKILL right after submission still yields exactly one run, the losers cancelled by
the on-cluster winner.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from rv_tui.allocator.model import Request, Strategy, StrategyKind
from rv_tui.allocator.race import Race, RaceEntry, RaceEventKind
from rv_tui.cluster.base import Cluster, JobInfo, JobSubmission
from rv_tui.gpus import GPU_SPECS
from rv_tui.jobs.store import GroupStore, new_group_id
from rv_tui.paths import RemotePaths
from rv_tui.quoting import q

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Backend:
    kind: str  # "ssh" or "demo"
    cluster: Cluster
    load: Any = None  # ClusterLoad on the real cluster


@pytest.fixture(params=["ssh", "demo"])
async def backend(request, tmp_path) -> AsyncIterator[Backend]:
    if request.param == "ssh":
        request.getfixturevalue("slurm_cluster")
        request.getfixturevalue("rv_home")
        request.getfixturevalue("clean_queue")
        load = request.getfixturevalue("cluster_load")
        from rv_tui.cluster.ssh import SshCluster
        from rv_tui.config import load_config

        cluster = SshCluster.from_config(load_config())
        await cluster.connect()
        b = Backend("ssh", cluster, load)
    else:
        request.getfixturevalue("monkeypatch").setenv("RV_HOME", str(tmp_path / "rv-home"))
        from rv_tui.cluster.demo import DemoCluster

        b = Backend("demo", DemoCluster(seed=7, speed=60))
    try:
        yield b
    finally:
        await b.cluster.close()


def strategy(gpu_type: str, nodes: int = 1, gpn: int = 4, walltime_s: int = 600) -> Strategy:
    spec = GPU_SPECS[gpu_type]
    return Strategy(
        id=f"{gpu_type}-{nodes}x{gpn}", label=f"{spec.label} {nodes}x{gpn}", gpu_type=gpu_type,
        partition=spec.partition, nodes=nodes, gpus_per_node=gpn, kind=StrategyKind.DIRECT,
        walltime_s=walltime_s, time_min_s=None, est_wait_s=0, est_su=0, mem="16G", cpus_per_task=1,
        constraint=spec.constraint, total_time_s=walltime_s,
    )


def claim_script(scratch: str, gid: str, s: Strategy, name: str, command: str) -> str:
    """The on-cluster claim as the job templates do it (used until rv_tui.jobs.templates lands)."""
    gdir = RemotePaths(scratch).group_dir(gid)
    logs = RemotePaths(scratch).logs_dir
    return f"""#!/bin/bash
#SBATCH -p {s.partition}
#SBATCH --gres=gpu:{GPU_SPECS[s.gpu_type].gres_type}:{s.gpus_per_node}
#SBATCH -N {s.nodes}
#SBATCH -t {s.walltime_s // 60}
#SBATCH -J {name}
#SBATCH --mem=1G
#SBATCH -o {logs}/%x-%j.out
#SBATCH -e {logs}/%x-%j.err
G={q(gdir)}
mkdir -p "$G"
if ! mkdir "$G/claim" 2>/dev/null; then echo "rv: group claimed by $(cat "$G/claim/job_id" 2>/dev/null)"; exit 0; fi
echo "$SLURM_JOB_ID" > "$G/claim/job_id"
for _ in $(seq 100); do [ -s "$G/jobs" ] && break; sleep 0.1; done
_sib=$(grep -vx "$SLURM_JOB_ID" "$G/jobs" 2>/dev/null | tr '\\n' ' ')
[ -n "$_sib" ] && scancel $_sib
{command}
"""


def make_entries(cluster: Cluster, strategies: Sequence[Strategy], command: str, gid: str,
                 name: str = "rvrace") -> list[RaceEntry]:
    try:
        from rv_tui.jobs import templates  # noqa: F401
        from rv_tui.cli.run import build_entries

        req = Request(gpus=strategies[0].total_gpus, command=command, name=name)
        return build_entries(cluster, None, req, list(strategies), gid, "run")
    except ImportError:
        pass
    logs = RemotePaths(cluster.scratch).logs_dir
    return [RaceEntry(JobSubmission(
        script=claim_script(cluster.scratch, gid, s, name, command), name=name, partition=s.partition,
        nodes=s.nodes, gpus_per_node=s.gpus_per_node, gpu_type=s.gpu_type, walltime_s=s.walltime_s,
        command=command, group_id=gid, stdout_path=f"{logs}/%x-%j.out", stderr_path=f"{logs}/%x-%j.err",
    ), s) for s in strategies]


async def prepare(b: Backend, gid: str) -> None:
    if b.kind == "ssh":  # the template creates the dir too; this keeps the marker dir ready
        await b.cluster.exec(f"mkdir -p {q(RemotePaths(b.cluster.scratch).group_dir(gid))}")


async def wait_all_ended(cluster: Cluster, ids: Sequence[str], timeout: float = 90) -> dict[str, JobInfo]:
    deadline = time.monotonic() + timeout
    last: dict[str, JobInfo] = {}
    while time.monotonic() < deadline:
        last.update({j.job_id: j for j in await cluster.jobs(list(ids))})
        if all(j in last and last[j].is_terminal for j in ids):
            return last
        await asyncio.sleep(0.3)
    pytest.fail(f"jobs did not all end within {timeout}s: {[(j, last.get(j) and last[j].state) for j in ids]}")


async def runs_of(b: Backend, marker: str, gid: str) -> list[str]:
    """Job ids that ran the command (one line per run, written by the command itself)."""
    if b.kind == "ssh":
        try:
            data = await b.cluster.read_file(marker)
        except Exception:
            return []
        return [x for x in data.decode().split() if x]
    # the demo plays the template: the claim owner logs "claimed by job N" and runs the command,
    # a loser logs "already won by job N" and exits; read what each job of the group wrote
    rec = GroupStore().get(gid)
    ran = []
    for j in (rec.jobs if rec else ()):
        try:
            out = (await b.cluster.read_file(RemotePaths(b.cluster.scratch).log_file(j.name, j.job_id))).decode()
        except Exception:
            continue
        if f"claimed by job {j.job_id}" in out:
            ran.append(j.job_id)
    return ran


def marker_command(b: Backend, marker: str, hold: float = 2) -> str:
    return f"echo $SLURM_JOB_ID >> {q(marker)}; sleep {hold}"


async def race_and_check(b: Backend, strategies: list[Strategy], tmp_path) -> tuple[Race, list[str]]:
    gid = new_group_id()
    marker = f"{b.cluster.scratch}/ran-{uuid.uuid4().hex}"
    await prepare(b, gid)
    entries = make_entries(b.cluster, strategies, marker_command(b, marker), gid)
    store = GroupStore()
    race = Race(b.cluster, entries, group_id=gid, store=store, poll_interval=0.5, timeout=120)
    events = []
    async with race:
        async for ev in race:
            events.append(ev)
    assert race.result.winner_id is not None, [e.describe() for e in events]
    assert len(race.job_ids) == len(strategies)
    final = await wait_all_ended(b.cluster, race.job_ids)
    runs = await runs_of(b, marker, gid)
    assert runs == [race.result.winner_id], f"command runs {runs}, winner {race.result.winner_id}"
    assert final[race.result.winner_id].state == "COMPLETED"
    for jid in race.job_ids:
        if jid != race.result.winner_id:
            assert final[jid].state in ("CANCELLED", "COMPLETED"), (jid, final[jid].state)
    assert not [j for j in final.values() if j.state == "PENDING"]
    rec = store.get(gid)
    assert rec.winner == race.result.winner_id and sorted(rec.job_ids) == sorted(race.job_ids)
    kinds = [e.kind for e in events]
    assert kinds.count(RaceEventKind.SUBMITTED) == len(strategies)
    assert kinds.index(RaceEventKind.WINNER) > max(i for i, k in enumerate(kinds) if k is RaceEventKind.SUBMITTED)
    return race, runs


@pytest.mark.cluster
async def test_race_with_full_partitions(backend, tmp_path):
    """A 4-GPU request over five partitions, three of them full: one job runs, the rest cancelled."""
    strategies = [strategy(t) for t in ("a6000", "a40", "a100_40", "v100", "h200")]
    full = {"a6000", "a40", "h200"}
    if backend.kind == "ssh":
        for t in full:
            spec = GPU_SPECS[t]
            nodes = {"a6000": 3, "a40": 2, "h200": 2}[t]
            ids = backend.load.fill(spec.partition, spec.gres(spec.per_node), count=nodes, duration=600)
            backend.load.wait_state(ids)
    race, _ = await race_and_check(backend, strategies, tmp_path)
    if backend.kind == "ssh":
        assert race.result.winner.strategy.gpu_type not in full


@pytest.mark.cluster
async def test_same_cycle_start_runs_once(backend, tmp_path):
    """Two idle partitions: both jobs start in the same scheduler cycle; the command runs once."""
    await race_and_check(backend, [strategy("a100_80", gpn=1), strategy("a100_40", gpn=1)], tmp_path)


@pytest.mark.cluster
async def test_race_group_recorded_on_cluster(backend, tmp_path):
    gid = new_group_id()
    await prepare(backend, gid)
    entries = make_entries(backend.cluster, [strategy("v100", gpn=1), strategy("a40", gpn=1)], "true", gid)
    race = Race(backend.cluster, entries, group_id=gid, store=GroupStore(tmp_path), timeout=120)
    async with race:
        async for ev in race:
            if ev.kind is RaceEventKind.SUBMITTED and len(race.job_ids) == 2:
                break  # leaving early cancels what was submitted
    gdir = RemotePaths(backend.cluster.scratch).group_dir(gid)
    jobs = (await backend.cluster.read_file(f"{gdir}/jobs")).decode().split()
    assert jobs == race.job_ids
    rec = json.loads(await backend.cluster.read_file(f"{gdir}/group.json"))
    assert rec["id"] == gid and [j["job_id"] for j in rec["jobs"]] == race.job_ids
    final = await wait_all_ended(backend.cluster, race.job_ids)
    assert race.result.outcome == "aborted"
    assert all(final[j].state in ("CANCELLED", "COMPLETED") for j in race.job_ids)


@pytest.mark.cluster
async def test_client_killed_after_submit(slurm_cluster, rv_home, clean_queue, cluster_load, tmp_path):
    """kill -9 of the client right after submission: the command still runs once, losers cancelled
    by the winner on the cluster (not by any client)."""
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    marker = f"{slurm_cluster.scratch}/ran-{uuid.uuid4().hex}"
    gid = new_group_id()
    # a full partition keeps one sibling pending: only the on-cluster winner can cancel it
    a6000 = GPU_SPECS["a6000"]
    ids = cluster_load.fill(a6000.partition, a6000.gres(8), count=3, duration=600)
    cluster_load.wait_state(ids)
    script = f"""
import asyncio, os, signal, sys
sys.path.insert(0, {ROOT!r})
sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from rv_tui.config import load_config
from rv_tui.cluster.ssh import SshCluster
from rv_tui.allocator.race import Race, RaceEventKind
from rv_tui.jobs.store import GroupStore
import test_race as T

async def main():
    c = SshCluster.from_config(load_config()); await c.connect()
    b = T.Backend("ssh", c)
    await T.prepare(b, {gid!r})
    strategies = [T.strategy("a6000", gpn=4), T.strategy("v100", gpn=1), T.strategy("a40", gpn=1)]
    entries = T.make_entries(c, strategies, T.marker_command(b, {marker!r}, hold=3), {gid!r})
    race = Race(c, entries, group_id={gid!r}, store=GroupStore())
    n = 0
    async for ev in race:
        if ev.kind is RaceEventKind.SUBMITTED:
            n += 1
            print(ev.job_id, flush=True)
            if n == len(strategies):
                os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RV_HOME": str(rv_home)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    job_ids = proc.stdout.split()
    assert len(job_ids) == 3, proc.stdout + proc.stderr
    cluster = SshCluster.from_config(load_config())
    await cluster.connect()
    try:
        final = await wait_all_ended(cluster, job_ids)
        runs = (await cluster.read_file(marker)).decode().split()
    finally:
        await cluster.close()
    assert len(runs) == 1 and runs[0] in job_ids[1:], runs
    assert final[runs[0]].state == "COMPLETED"
    for jid in job_ids:
        if jid != runs[0]:  # cancelled by the winner, or (if it got in) exited as a loser
            assert final[jid].state in ("CANCELLED", "COMPLETED"), (jid, final[jid].state)
