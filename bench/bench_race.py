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

    python bench/bench_race.py [--trials 3]                 # latency (above)
    python bench/bench_race.py --mode merit [--races 20]    # who wins an idle `rv run -g 4`
    python bench/bench_race.py --mode busy [--races 5]      # start -> claim with cheap types full

``merit`` and ``busy`` race the real plan of ``rv run -g 4`` (probe, rank, templates, race engine)
twice per round: ``before`` with the templates and race engine of commit ``c67d24b`` (loaded from
git), ``after`` with the current ones.  ``merit`` counts how often the rank-1 strategy wins and how
many losers got an allocation (their ``.out`` exists: slurmstepd creates it when the job starts);
``busy`` fills the partitions of the two cheapest types (the load jobs it submitted are the only
ones it cancels) and measures the winner's start (birth time of its ``.out``) to its claim (birth
time of ``claim/``).
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
from rv_tui.groupstore import new_group_id  # noqa: E402
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


BEFORE_COMMIT = "c67d24b"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_before(rel: str, name: str):
    """A module as it was at BEFORE_COMMIT (its imports resolve against today's tree)."""
    import importlib.util
    import subprocess
    import tempfile

    src = subprocess.run(["git", "-C", ROOT, "show", f"{BEFORE_COMMIT}:{rel}"], check=True,
                         capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="rv-before-"), os.path.basename(rel))
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


async def births(c, paths: list[str]) -> dict[str, float]:
    """Birth times (float seconds) of the remote paths that exist, in one round trip."""
    from rv_tui.quoting import join

    res = await c.exec(join(["stat", "-c", "%.W %n", "--", *paths]) + " 2>/dev/null; exit 0")
    out: dict[str, float] = {}
    for line in res.stdout.splitlines():
        t, _, path = line.partition(" ")
        try:
            out[path] = float(t)
        except ValueError:
            continue
    return out


async def race_once(c, variant: str, before: tuple | None, gpus: int = 4) -> dict:
    """One `rv run -g N` race through the real plan; what happened."""
    from rv_tui.allocator.model import Request
    from rv_tui.allocator.plan import make_plan
    from rv_tui.jobs.launch import job_context
    from rv_tui.jobs.templates import build_submission

    marker = f"{c.scratch}/bench-ran-{uuid.uuid4().hex}"
    cmd = f"echo $SLURM_JOB_ID >> {q(marker)}; sleep 2"
    req = Request(gpus=gpus, command=cmd, name="rvbench")
    plan = await make_plan(c, req)
    gid = new_group_id()
    ctx = job_context(c, None, req, gid, name="rvbench")  # the same context for both variants
    if variant == "before":
        old_templates, old_race = before  # type: ignore[misc]
        race = old_race.Race(c, [RaceEntry(old_templates.build_submission(ctx, s), s) for s in plan.strategies],
                             group_id=gid, timeout=180)
    else:
        race = Race(c, [RaceEntry(build_submission(ctx, s), s) for s in plan.strategies], group_id=gid,
                    timeout=180)
    await race.run()
    ids = race.job_ids
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        infos = await c.jobs(ids)
        if len(infos) == len(ids) and all(i.is_terminal for i in infos):
            break
        await asyncio.sleep(0.5)
    await c.cancel(ids)
    logs = RemotePaths(c.scratch)
    win = race.result.winner_id
    outs = {j: logs.log_file("rvbench", j) for j in ids}
    claim = f"{logs.group_dir(gid)}/claim"
    b = await births(c, [*outs.values(), claim])
    try:
        ran = (await c.read_file(marker)).decode().split()
    except Exception:
        ran = []
    rank_ids = [s.id for s in plan.strategies]
    wid = race.result.winner.strategy.id if race.result.winner and race.result.winner.strategy else None
    r1 = next((j for j, e in race.by_id.items() if e.strategy is not None and e.strategy.id == rank_ids[0]), None)
    r1_info = race.last.get(r1) if r1 else None
    return {
        "rank1_seen": f"{r1_info.state} {r1_info.reason or ''}".strip() if r1_info else None,
        "variant": variant, "winner_rank": rank_ids.index(wid) + 1 if wid in rank_ids else None,
        "winner": race.result.winner.label if race.result.winner else None,
        "strategies": len(ids), "runs": len(ran),
        "losers_allocated": sum(1 for j, p in outs.items() if j != win and p in b),
        "start_to_claim_s": (b[claim] - b[outs[win]]) if win and claim in b and outs[win] in b else None,
        "startable": [s.id for s in plan.strategies if s.est_wait_s <= 60],
    }


async def bench_merit(c, races: int) -> None:
    before = (load_before("rv_tui/jobs/templates.py", "rv_before_templates"),
              load_before("rv_tui/allocator/race.py", "rv_before_race"))
    rows: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(races):
        for variant in ("before", "after"):
            try:
                r = await race_once(c, variant, before)
            except Exception as exc:  # the shared cluster restarted under us: skip the round
                print(f"race {i + 1} {variant}: skipped: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(20)
                continue
            rows[variant].append(r)
            print(json.dumps({"race": i + 1, **r}), file=sys.stderr, flush=True)
    print(f"{'variant':<8}{'races':>6}{'rank-1 wins':>13}{'losers allocated/race':>23}{'ran >1x':>10}")
    for v, xs in rows.items():
        wins = sum(1 for x in xs if x["winner_rank"] == 1)
        alloc = statistics.mean(x["losers_allocated"] for x in xs)
        doubles = sum(1 for x in xs if x["runs"] > 1)
        print(f"{v:<8}{len(xs):>6}{wins:>9} / {len(xs):<3}{alloc:>19.2f}{doubles:>10}")
        ranks = [x["winner_rank"] for x in xs]
        print(f"          winner ranks: {ranks}")


async def bench_busy(c, races: int) -> None:
    from rv_tui.allocator.model import Request
    from rv_tui.allocator.plan import make_plan

    sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
    from load import ClusterLoad  # type: ignore

    load = ClusterLoad.from_state_dir()
    before = (load_before("rv_tui/jobs/templates.py", "rv_before_templates"),
              load_before("rv_tui/allocator/race.py", "rv_before_race"))
    plan = await make_plan(c, Request(gpus=4, command="true"))
    cheap: list[str] = []
    for s in plan.strategies:
        if s.gpu_type not in cheap:
            cheap.append(s.gpu_type)
        if len(cheap) == 2:
            break
    mine: list[str] = []
    try:
        for t in cheap:
            spec = GPU_SPECS[t]
            nodes = len(load.partition_nodes(spec.partition))
            mine += load.fill(spec.partition, spec.gres(spec.per_node), count=nodes, duration=1800)
        load.wait_state(mine, timeout=60)
        rows: dict[str, list[dict]] = {"before": [], "after": []}
        for i in range(races):
            for variant in ("before", "after"):
                try:
                    r = await race_once(c, variant, before)
                except Exception as exc:
                    print(f"race {i + 1} {variant}: skipped: {exc}", file=sys.stderr, flush=True)
                    continue
                rows[variant].append(r)
                print(json.dumps({"race": i + 1, "full": cheap, **r}), file=sys.stderr, flush=True)
    finally:
        if mine:
            load.slurm("scancel", *mine, check=False)
    print(f"cheapest types full: {', '.join(cheap)}")
    print(f"{'variant':<8}{'races':>6}{'start->claim median s':>23}{'max s':>8}{'winner ranks':>16}")
    meds = {}
    for v, xs in rows.items():
        ts = [x["start_to_claim_s"] for x in xs if x["start_to_claim_s"] is not None]
        meds[v] = statistics.median(ts) if ts else float("nan")
        print(f"{v:<8}{len(xs):>6}{meds[v]:>23.3f}{max(ts, default=float('nan')):>8.3f}   "
              f"{[x['winner_rank'] for x in xs]}")
    print(f"added delay (after - before, medians): {meds['after'] - meds['before']:+.3f} s")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--mode", choices=("latency", "merit", "busy"), default="latency")
    ap.add_argument("--races", type=int, default=20)
    a = ap.parse_args()
    if a.mode in ("merit", "busy"):
        c, _ = await open_cluster()
        try:
            await (bench_merit(c, a.races) if a.mode == "merit" else bench_busy(c, a.races))
        finally:
            await c.close()
        return
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
