"""A checkpoint chain is one job: ps groups its segments, stop cancels the running segment, the
follower (rv run -f, rv logs -f) ends with the chain's final state, and snapshot pruning keeps
the chain's snapshot while a later segment waits (by job id, not by a path string).

Real cluster: a checkpoint strategy with a 1-minute walltime runs ~30 s segments (the template
halves a walltime shorter than its buffer), so a chain of two segments takes about a minute.
Before the fix: the follower stopped at segment 1 (COMPLETED, exit 0) while segment 2 failed
with 5; ``rv stop <group>`` said "nothing to cancel" while segment 2 ran; ``rv ps`` did not
list segment 2 in its group; prune removed a snapshot whose chain was still queued.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rv_tui.allocator.model import StrategyKind
from rv_tui.jobs.store import GroupRecord, merge_records, parse_segments


# ----------------------------------------------------------------------------- unit

@given(st.lists(st.one_of(st.integers(1, 10**9).map(str), st.text(max_size=12)), max_size=12))
def test_parse_segments_keeps_ids_in_order_once(lines: list[str]) -> None:
    import re

    ids = parse_segments("\n".join(lines))
    flat = [y.strip() for x in lines for y in x.splitlines()]
    assert list(ids) == list(dict.fromkeys(y for y in flat if re.fullmatch(r"[0-9]+(_[0-9]+)?", y)))


def _rec(**kw: object) -> GroupRecord:
    return GroupRecord.from_dict({"id": "g1", "kind": "run", "name": "n", "command": "c",
                                  "created_at": "2026-01-01T00:00:00+00:00", "winner": "10",
                                  "jobs": [{"job_id": "10", "strategy_id": "s", "label": "l",
                                            "gpu_type": "v100", "partition": "p", "nodes": 1,
                                            "gpus_per_node": 1}], **kw})


def test_the_chain_only_the_cluster_knows_survives_the_merge() -> None:
    local = _rec()
    remote = _rec(segments=["10", "11", "12"])
    (merged,) = merge_records([local], [remote])
    assert merged.segments == ("10", "11", "12")
    assert merged.all_job_ids == ["10", "11", "12"] and merged.current_job == "12"
    assert merged.segment_index("11") == 2 and merged.segment_index("99") is None
    assert GroupRecord.from_dict(json.loads(merged.to_json())).segments == merged.segments


def test_ps_never_reaps_a_pending_segment_as_a_loser() -> None:
    from rv_tui.cli.ps import reap_orphaned_losers

    class Spy:
        cancelled: list[str] = []

        async def cancel(self, ids):  # noqa: ANN001
            self.cancelled += list(ids)

    data = {"groups": [{"winner": "10", "segments": ["10", "11"], "jobs": [
        {"job_id": "10", "state": "COMPLETED"}, {"job_id": "11", "state": "PENDING"},
        {"job_id": "13", "state": "PENDING"}]}]}
    spy = Spy()
    assert asyncio.run(reap_orphaned_losers(spy, data)) == ["13"]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- real cluster

async def _open():
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    c = SshCluster.from_config(load_config())
    await c.connect()
    return c


def _checkpoint(gpu: str = "v100"):
    from test_race import strategy

    s = strategy(gpu, gpn=1, walltime_s=60)
    return replace(s, id=f"{gpu}-ckpt", kind=StrategyKind.CHECKPOINT, total_time_s=600)


async def _race(cluster, command: str, name: str) -> tuple[str, str]:  # noqa: ANN001
    """Race one checkpoint strategy; (group id, winner)."""
    from rv_tui.allocator.race import Race
    from rv_tui.jobs.store import GroupStore, new_group_id
    from test_race import make_entries

    gid = new_group_id()
    entries = make_entries(cluster, [_checkpoint()], command, gid, name=name)
    race = Race(cluster, entries, group_id=gid, store=GroupStore(), poll_interval=0.5, timeout=300)
    await race.run()
    assert race.result.winner_id is not None, race.result
    return gid, race.result.winner_id


async def _wait_segments(cluster, gid: str, n: int, timeout: float = 150) -> tuple[str, ...]:  # noqa: ANN001
    from rv_tui.jobs.store import read_segments

    deadline = time.monotonic() + timeout
    segs: tuple[str, ...] = ()
    while time.monotonic() < deadline:
        segs = await read_segments(cluster, gid)
        if len(segs) >= n:
            return segs
        await asyncio.sleep(1)
    pytest.fail(f"the chain of {gid} has {segs}, not {n} segments, after {timeout}s")


@pytest.mark.cluster
@pytest.mark.slow
async def test_follow_ends_with_the_chains_final_state(capsys, rv_home, own_jobs, slurm_cluster) -> None:
    """Segment 1 is cut by its timeout and resubmits; segment 2 fails with 5: following segment 1
    must end with FAILED/5 on segment 2 (rv run -f's exit code), not COMPLETED/0; ``rv logs -f``
    of segment 1 exits 5 too, and plain ``rv logs`` of it shows it and names the next segment."""
    from rv_tui.cli.run import follow_job
    from rv_tui.logs.follow import RESUBMITTED
    from rv_tui.quoting import q

    marker = f"{slurm_cluster.scratch}/chain-{uuid.uuid4().hex}"
    cmd = (f"n=$(cat {q(marker)} 2>/dev/null | wc -l); echo $SLURM_JOB_ID >> {q(marker)}; "
           f"if [ \"$n\" -ge 1 ]; then echo failing; exit 5; fi; sleep 100")
    cluster = await _open()
    try:
        gid, winner = await _race(cluster, cmd, "rvchain")
        import io

        buf = io.StringIO()
        ended = await follow_job(cluster, winner, out=buf)
        segs = await _wait_segments(cluster, gid, 2, timeout=5)
        runs = (await cluster.read_file(marker)).decode().split()
    finally:
        await cluster.close()
    assert ended is not None and (ended.state, ended.exit_code) == ("FAILED", 5), ended
    assert ended.job_id == segs[1] != winner
    assert runs == [winner, segs[1]]
    assert "failing" in buf.getvalue()  # segment 2's output was followed too
    assert RESUBMITTED  # the hand-over is announced (printed on stderr by follow_job)
    from rv_tui.cli.main import main as rv_main

    capsys.readouterr()
    assert await asyncio.to_thread(rv_main, ["logs", "-f", winner]) == 5
    out, err = capsys.readouterr()
    assert "failing" in out and f"checkpoint segment {winner} done" in err, (out, err)
    assert await asyncio.to_thread(rv_main, ["logs", winner]) == 0
    out, err = capsys.readouterr()
    assert "failing" not in out and f"continues as job {segs[1]}" in err, (out, err)


@pytest.mark.cluster
@pytest.mark.slow
def test_ps_stop_and_prune_treat_the_chain_as_one_job(capsys, rv_home, own_jobs, slurm_cluster) -> None:
    from rv_tui.cli.main import main as rv_main
    from rv_tui.quoting import q
    from rv_tui.workspace.snapshots import prune_snapshots

    marker = f"{slurm_cluster.scratch}/chain-{uuid.uuid4().hex}"
    snaps = f"{slurm_cluster.scratch}/.rv/h11-snaps-{uuid.uuid4().hex[:8]}"
    cmd = f"echo $SLURM_JOB_ID >> {q(marker)}; sleep 100"

    async def start() -> tuple[str, str, tuple[str, ...]]:
        cluster = await _open()
        try:
            gid, winner = await _race(cluster, cmd, "rvchain2")
            segs = await _wait_segments(cluster, gid, 2)
            from rv_tui.logs.follow import job_info

            deadline = time.monotonic() + 60  # segment 1 gone from the queue: only the chain keeps
            while time.monotonic() < deadline:  # its snapshot now
                info = await job_info(cluster, winner)
                if info is None or info.is_terminal:
                    break
                await asyncio.sleep(0.5)
            return gid, winner, segs
        finally:
            await cluster.close()

    gid, winner, segs = asyncio.run(start())
    seg2 = segs[1]

    async def prune() -> tuple[list[str], list[str]]:
        cluster = await _open()
        try:
            old = 1_000_000_000_000  # 2001: far older than the 7-day limit
            keep, drop = f"{snaps}/rvchain2-{old}", f"{snaps}/other-{old}"
            await cluster.exec(f"mkdir -p {q(keep)} {q(drop)} && echo {q(winner)} > {q(keep)}/.rv-jobs"
                               f" && echo 1 > {q(drop)}/.rv-jobs")
            res = await prune_snapshots(cluster, snaps)
            await cluster.exec(f"rm -rf {q(snaps)}")
            return res.kept_in_use, res.removed
        finally:
            await cluster.close()

    kept, removed = asyncio.run(prune())
    assert [Path(k).name.split("-")[0] for k in kept] == ["rvchain2"], (kept, removed)
    assert [Path(r).name.split("-")[0] for r in removed] == ["other"]

    code = rv_main(["ps", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    group = next(g for g in json.loads(out)["groups"] if g["group_id"] == gid)
    rows = {r["job_id"]: r for r in group["jobs"]}
    assert seg2 in rows and rows[seg2]["segment"] == 2 and rows[seg2]["winner"], rows
    assert group["current_job"] == seg2

    code = rv_main(["stop", gid, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert seg2 in json.loads(out)["cancelled"], out

    async def after() -> tuple[str, tuple[str, ...]]:
        cluster = await _open()
        try:
            from rv_tui.logs.follow import job_info

            deadline = time.monotonic() + 60
            info = await job_info(cluster, seg2)
            while info is not None and not info.is_terminal and time.monotonic() < deadline:
                await asyncio.sleep(1)
                info = await job_info(cluster, seg2)
            from rv_tui.jobs.store import read_segments

            return (info.state if info else "GONE"), await read_segments(cluster, gid)
        finally:
            await cluster.close()

    state, chain = asyncio.run(after())
    assert state == "CANCELLED"
    assert chain == segs[:2]  # and nothing resubmitted after the stop


# ----------------------------------------------------------------------------- demo cluster

async def test_demo_chain_is_one_job_too(tmp_path, monkeypatch) -> None:
    """The simulated Rivanna plays the same chain (segments file, rvgroup comment): follow ends
    on the last segment, ps groups every segment, stop resolves to the whole chain."""
    monkeypatch.setenv("RV_HOME", str(tmp_path / "rv-home"))
    from rv_tui.allocator.model import Request
    from rv_tui.allocator.race import Race
    from rv_tui.cli.ps import collect, resolve_targets
    from rv_tui.cluster.demo import DemoCluster
    from rv_tui.jobs.launch import build_entries
    from rv_tui.jobs.store import GroupStore, new_group_id, read_segments
    from rv_tui.logs.events import JobEnded, JobStatus
    from rv_tui.logs.follow import RESUBMITTED, follow
    from test_race import strategy

    cluster = DemoCluster(seed=3, speed=600)
    s = replace(strategy("a6000", gpn=1, walltime_s=3600), id="a6000-ckpt", kind=StrategyKind.CHECKPOINT,
                total_time_s=3 * 3600)
    gid = new_group_id()
    entries = build_entries(cluster, None, Request(gpus=1, command="python train.py", name="ck"), [s], gid)
    store = GroupStore()
    race = Race(cluster, entries, group_id=gid, store=store)
    await race.run()
    winner = race.result.winner_id
    assert winner is not None
    seen_ps = False
    events = []
    async for ev in follow(cluster, winner, poll=0.5):
        if isinstance(ev, (JobStatus, JobEnded)):
            events.append(ev)
        if isinstance(ev, JobStatus) and ev.state == RESUBMITTED and not seen_ps:
            seen_ps = True  # mid-chain: ps and stop see the whole chain
            data = await collect(cluster, store, True)
            group = next(g for g in data["groups"] if g["group_id"] == gid)
            assert [r["segment"] for r in group["jobs"]][:2] == [1, 2], group
            ids, rec = await resolve_targets(cluster, store, gid)
            assert rec is not None and set(rec.segments) <= set(ids)
    chain = await read_segments(cluster, gid)
    ended = events[-1]
    assert isinstance(ended, JobEnded) and ended.job_id == chain[-1] and len(chain) >= 2, (events, chain)
    assert ended.state == "COMPLETED" and seen_ps
    handovers = [e for e in events if isinstance(e, JobStatus) and e.state == RESUBMITTED]
    assert [e.job_id for e in handovers] == list(chain[:-1])
