"""SshCluster against the real local Slurm cluster over asyncssh."""

from __future__ import annotations

import asyncio
import time

import pytest

from rv_tui.cluster.base import JobSubmission, ProbeSpec
from rv_tui.cluster.ssh import SshCluster
from rv_tui.config import load_config

pytestmark = pytest.mark.cluster


@pytest.fixture
async def cluster(rv_home):
    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


def script(body: str, name: str = "rv-h3-test") -> str:
    return f"#!/bin/bash\n#SBATCH -J {name}\n#SBATCH -p gpu-v100\n#SBATCH --gres=gpu:v100:1\n" \
           f"#SBATCH -t 00:05:00\n#SBATCH -o /dev/null\n{body}\n"


def sub(body: str) -> JobSubmission:
    return JobSubmission(script=script(body), name="rv-h3-test", partition="gpu-v100", nodes=1,
                         gpus_per_node=1, gpu_type="v100", walltime_s=300)


async def wait_for(cluster: SshCluster, job_id: str, pred, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        (info,) = await cluster.jobs([job_id])
        if pred(info):
            return info
        assert time.monotonic() < deadline, f"job {job_id} stuck in {info.state}"
        await asyncio.sleep(0.3)


async def test_snapshot_exact_and_deduplicated(cluster, clean_queue):
    snap = await cluster.snapshot()
    names = [n.name for n in snap.nodes]
    assert len(names) == len(set(names)) == 18
    by_type = snap.free_by_type()
    assert by_type["a6000"][1] == 24 and by_type["mig"][1] == 56  # each node counted once
    assert all(0 <= free <= total for free, total in by_type.values())
    assert snap.taken_at.utcoffset() is not None  # aware, cluster zone


async def test_submit_jobs_cancel_and_exit_codes(cluster, clean_queue):
    listing = f"ls -A {cluster.scratch}/.rv/tmp 2>/dev/null || true"
    # scripts other runs left (a submission cut off by a dropped connection) are not ours to judge
    before = set((await cluster.exec(listing)).stdout.split())
    ok, bad, sleeper = await cluster.submit([sub("true"), sub("exit 3"), sub("sleep 300")])
    assert ok.ok and bad.ok and sleeper.ok, (ok.error, bad.error, sleeper.error)
    done = await wait_for(cluster, ok.job_id, lambda j: j.is_terminal)
    assert done.state == "COMPLETED" and done.exit_code == 0
    failed = await wait_for(cluster, bad.job_id, lambda j: j.is_terminal)
    assert failed.state == "FAILED" and failed.exit_code == 3
    await wait_for(cluster, sleeper.job_id, lambda j: j.has_started)
    # cancelling a finished id together with a running one is not an error
    await cluster.cancel([ok.job_id, sleeper.job_id, "999999"])
    gone = await wait_for(cluster, sleeper.job_id, lambda j: j.is_terminal)
    assert gone.state == "CANCELLED" and gone.exit_code != 0
    # the temp scripts of this submission were removed
    res = await cluster.exec(listing)
    assert res.ok and set(res.stdout.split()) - before == set()


async def test_submit_refused_carries_error(cluster, clean_queue):
    bad = JobSubmission(script="#!/bin/bash\n#SBATCH -p no-such-partition\ntrue\n", name="x",
                        partition="no-such-partition", nodes=1, gpus_per_node=1, gpu_type="v100",
                        walltime_s=60)
    (res,) = await cluster.submit([bad])
    assert not res.ok and "partition" in res.error.lower()


async def test_user_jobs_listing(cluster, clean_queue):
    (s,) = await cluster.submit([sub("sleep 300")])
    jobs = await cluster.jobs()
    mine = [j for j in jobs if j.job_id == s.job_id]
    assert mine and mine[0].user == cluster.user and mine[0].gres == "gpu:v100:1"
    await cluster.cancel([s.job_id])


async def test_test_only_start_in_cluster_zone(cluster, clean_queue, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the laptop is far from New York
    time.tzset()
    try:
        now = await cluster.now()
        res = await cluster.test_only([
            ProbeSpec("gpu-a6000", "gpu:a6000:4", 3600, cpus_per_task=16, mem="187G"),
            ProbeSpec("gpu-a6000", "gpu:a6000:9", 3600),
        ])
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert res[0].start is not None and abs((res[0].start - now).total_seconds()) < 120
    assert res[1].start is None and "not available" in res[1].error


async def test_files_exec_and_stream(cluster):
    path = f"{cluster.scratch}/.rv/h3-test/it's a file.txt"
    await cluster.write_file(path, "one\ntwo\n")
    assert await cluster.read_file(path) == b"one\ntwo\n"
    got = []
    async for item in cluster.stream_files([path]):
        got.append(item.line)
        if len(got) == 2:
            break
    assert got == ["one", "two"]
    r = await cluster.exec("echo $((6*7))")
    assert r.ok and r.stdout.strip() == "42"
