"""Race latency on the local Slurm cluster: time from the winner's start to its siblings cancelled.

Three paths, measured in the same run on the same cluster:

* ``client``   -- rv's race engine: polls only its own job ids every 0.5 s, asks the claim, cancels
  every loser in one call (the on-cluster sibling cancel is switched off for this path);
* ``cluster``  -- the on-cluster path: the winning job's script cancels its siblings itself
  (no client involved after submission);
* ``original`` -- the original rv's monitor loop emulated: full-queue poll with a 1 s interval
  growing x1.3 up to 5 s, winner = first started job in queue order, then one scancel.

Times use the winner's own start stamp (``date +%s.%N`` written by the job) and the local clock
(the test cluster runs on this host, so the clocks are the same).  Figures are reported as ratios
against the ``original`` baseline.  The winner here starts within a second of submission, while
the original's interval is still near 1 s: that is its best case (after a real queue wait its
interval has grown to 5 s, i.e. about 2.5 s on average before it even sees the start).

    python bench/bench_race.py [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from rv_tui.allocator.race import Race, RaceEntry  # noqa: E402
from rv_tui.cluster.base import JobSubmission  # noqa: E402
from rv_tui.gpus import GPU_SPECS  # noqa: E402
from rv_tui.jobs.store import new_group_id  # noqa: E402
from rv_tui.paths import RemotePaths  # noqa: E402
from rv_tui.quoting import q  # noqa: E402

STATE = os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster")


def script(scratch: str, gid: str, partition: str, gres: str, self_cancel: bool) -> str:
    g = RemotePaths(scratch).group_dir(gid)
    cancel = ('for _ in $(seq 100); do [ -s "$G/jobs" ] && break; sleep 0.05; done\n'
              '_s=$(grep -vx "$SLURM_JOB_ID" "$G/jobs" | tr "\\n" " "); [ -n "$_s" ] && scancel $_s\n'
              'date +%s.%N > "$G/cancelled"\n') if self_cancel else ""
    return f"""#!/bin/bash
#SBATCH -p {partition}
#SBATCH --gres={gres}
#SBATCH -t 5
#SBATCH -J rvbench
#SBATCH --mem=1G
#SBATCH -o /dev/null
#SBATCH -e /dev/null
G={q(g)}
_t=$(date +%s.%N)
mkdir -p "$G"
mkdir "$G/claim" 2>/dev/null || exit 0
echo "$SLURM_JOB_ID" > "$G/claim/owner"  # as the real templates do
echo "$_t" > "$G/started"
{cancel}sleep 20
"""


async def open_cluster():
    from rv_tui.config import load_config

    try:
        from rv_tui.cluster.ssh import SshCluster
    except ImportError:
        raise SystemExit("rv_tui.cluster.ssh is needed for the bench")
    info = json.load(open(os.path.join(STATE, "cluster.json")))
    home = f"/tmp/rv-bench-home-{os.getpid()}"
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f"""[connection]\nhost = "{info['host']}"\nhostname = "{info['host']}"\nuser = "{info['user']}"
port = {info['port']}\nidentity_file = "{info['identity_file']}"\nknown_hosts = "{info['known_hosts']}"
[paths]\nscratch = "{info['scratch']}"\n[scratch_keepalive]\nenabled = false\n""")
    os.environ["RV_HOME"] = home
    c = SshCluster.from_config(load_config())
    await c.connect()
    return c, info


def entries(c, gid: str, self_cancel: bool) -> list[RaceEntry]:
    # two partitions are full (pending siblings), one is free (the winner)
    parts = [("gpu-a6000", "gpu:a6000:1"), ("gpu-a40", "gpu:a40:1"), ("gpu-v100", "gpu:v100:1")]
    return [RaceEntry(JobSubmission(script=script(c.scratch, gid, p, g, self_cancel), name="rvbench",
                                    partition=p, nodes=1, gpus_per_node=1, gpu_type=g.split(":")[1],
                                    walltime_s=300, command="sleep 20", group_id=gid)) for p, g in parts]


async def started_stamp(c, gid: str) -> float:
    g = RemotePaths(c.scratch).group_dir(gid)
    for _ in range(200):
        try:
            return float((await c.read_file(f"{g}/started")).decode().strip())
        except Exception:
            await asyncio.sleep(0.1)
    raise RuntimeError("winner never wrote its start stamp")


async def losers_gone(c, ids: list[str]) -> float:
    """Local time at which every loser is seen terminal (used for the on-cluster path)."""
    g = None
    while True:
        infos = await c.jobs(ids)
        if infos and all(i.is_terminal for i in infos):
            return time.time()
        await asyncio.sleep(0.05)


async def trial_client(c) -> float:
    gid = new_group_id()
    race = Race(c, entries(c, gid, self_cancel=False), group_id=gid, timeout=90)
    await race.run()
    if race.result.winner_id is None:
        raise RuntimeError(f"race ended {race.result.outcome}")
    done = time.time()
    t0 = await started_stamp(c, gid)
    await c.cancel(race.job_ids)
    return done - t0


async def trial_cluster(c) -> float:
    gid = new_group_id()
    res = await c.submit([e.submission for e in entries(c, gid, self_cancel=True)])
    ids = [r.job_id for r in res if r.job_id]
    g = RemotePaths(c.scratch).group_dir(gid)
    await c.exec(f"mkdir -p {q(g)}")
    await c.write_file(f"{g}/jobs", "".join(i + "\n" for i in ids))
    t0 = await started_stamp(c, gid)
    for _ in range(300):
        try:
            t1 = float((await c.read_file(f"{g}/cancelled")).decode().strip())
            break
        except Exception:
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError("winner never cancelled its siblings")
    await c.cancel(ids)
    return t1 - t0


async def trial_original(c) -> float:
    """The original rv's monitorAllocation: full squeue, 1 s x1.3 backoff to 5 s, first in order."""
    gid = new_group_id()
    res = await c.submit([e.submission for e in entries(c, gid, self_cancel=False)])
    ids = [r.job_id for r in res if r.job_id]
    interval = 1.0
    deadline = time.monotonic() + 90
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no job of {ids} started (queue cleared by someone else?)")
        await asyncio.sleep(interval)
        interval = min(interval * 1.3, 5.0)
        queue = await c.jobs()  # the whole user queue, as the original did
        mine = [j for j in queue if j.job_id in ids]
        winner = next((j for j in mine if j.has_started), None)
        if winner:
            await c.cancel([j for j in ids if j != winner.job_id])
            done = time.time()
            break
    t0 = await started_stamp(c, gid)
    await c.cancel(ids)
    return done - t0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "cluster"))
    from load import ClusterLoad  # type: ignore

    load = ClusterLoad.from_state_dir()
    c, _ = await open_cluster()
    results: dict[str, list[float]] = {"client": [], "cluster": [], "original": []}
    try:
        load.clear(users=(load.user, load.other_user))
        ids = load.fill("gpu-a6000", "gpu:a6000:8", count=3, duration=1800)
        ids += load.fill("gpu-a40", "gpu:a40:8", count=2, duration=1800)
        load.wait_state(ids)
        for _ in range(a.trials):
            for name, fn in (("original", trial_original), ("client", trial_client), ("cluster", trial_cluster)):
                try:
                    results[name].append(await fn(c))
                    print(f"{name}: {results[name][-1]:.2f}s", file=sys.stderr, flush=True)
                except RuntimeError as exc:  # another session cleared the queue mid-trial
                    print(f"{name}: trial skipped: {exc}", file=sys.stderr, flush=True)
                load.clear(users=(load.user,))
    finally:
        load.clear(users=(load.user, load.other_user))
        await c.close()
    results = {k: v for k, v in results.items() if v}
    base = statistics.median(results["original"])
    print(f"{'path':<10}{'median s':>10}{'min':>8}{'max':>8}{'vs original':>13}")
    for name, xs in results.items():
        med = statistics.median(xs)
        print(f"{name:<10}{med:>10.2f}{min(xs):>8.2f}{max(xs):>8.2f}{med / base:>12.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
