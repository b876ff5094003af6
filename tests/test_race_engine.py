"""Race engine decisions on a scripted in-memory cluster (unit level; the end-to-end race suite,
run on the real Slurm cluster and on the demo, is tests/test_race.py).

Why a scripted cluster here: the dangerous interleavings (two jobs seen started in one poll, a job
started but not yet claimed, a fast winner that finished between polls, Ctrl-C mid-race) must be
produced exactly, every time.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest

from rv_tui.allocator.race import Race, RaceEntry, RaceEventKind, read_claim_owner
from rv_tui.cluster.base import ExecResult, JobInfo, JobSubmission, SubmitResult
from rv_tui.jobs.store import GroupStore


class Scripted:
    """A cluster whose job states the test sets; records every call."""

    name = "scripted"
    user = "u"
    scratch = "/scratch/u"
    is_demo = False

    def __init__(self, fail: Sequence[int] = ()) -> None:
        self.fail = set(fail)
        self.states: dict[str, JobInfo] = {}
        self.files: dict[str, str] = {}
        self.cancels: list[list[str]] = []
        self.submits = 0
        self.on_poll = None  # callable(poll_no) run before each jobs() answer
        self.polls = 0
        self.next_id = 100

    async def submit(self, subs: Sequence[JobSubmission]) -> list[SubmitResult]:
        self.submits += 1
        out = []
        for i, s in enumerate(subs):
            if i in self.fail:
                out.append(SubmitResult(s, None, "sbatch: error: QOSMaxGRESPerUser"))
                continue
            jid = str(self.next_id)
            self.next_id += 1
            self.states[jid] = JobInfo(jid, s.name, "u", "PENDING", s.partition, reason="Priority")
            out.append(SubmitResult(s, jid))
        return out

    async def jobs(self, job_ids=None, *, all_users=False):
        self.polls += 1
        if self.on_poll:
            self.on_poll(self.polls)
        return [self.states[j] for j in (job_ids or self.states) if j in self.states]

    async def cancel(self, ids):
        self.cancels.append(list(ids))
        for j in ids:
            info = self.states.get(j)
            if info and not info.is_terminal:
                self.states[j] = JobInfo(j, info.name, "u", "CANCELLED", info.partition,
                                         elapsed_s=info.elapsed_s)

    async def write_file(self, path, data, mode=0o600):
        self.files[path] = data if isinstance(data, str) else data.decode()

    async def read_file(self, path):
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path].encode()

    async def exec(self, command, *, timeout=None):
        if command.startswith("mkdir"):
            return ExecResult(command, 0, "", "")
        return ExecResult(command, 127, "", "sh: not supported")  # claims are read as files

    async def now(self):
        return datetime.now(timezone.utc)

    async def close(self):
        pass

    # -- test helpers
    def set(self, jid: str, state: str, start_offset: float = 0.0, **kw) -> None:
        info = self.states[jid]
        start = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=start_offset)
        self.states[jid] = JobInfo(jid, info.name, "u", state, info.partition, start_time=start,
                                   nodes=("n1",), **kw)

    def claim(self, gid: str, jid: str) -> None:
        self.files[f"{self.scratch}/.rv/groups/{gid}/claim/owner"] = jid


def entries(n: int, gid: str = "gtest") -> list[RaceEntry]:
    return [RaceEntry(JobSubmission(script="#!/bin/sh\n", name="t", partition=f"p{i}", nodes=1, gpus_per_node=1,
                                    gpu_type="a6000", walltime_s=60, command="true", group_id=gid))
            for i in range(n)]


async def run(race: Race):
    evs = []
    async with race:
        async for ev in race:
            evs.append(ev)
    return evs


async def test_single_batch_records_and_first_start_wins(tmp_path):
    c = Scripted()
    c.on_poll = lambda n: (n == 2 and c.set("101", "RUNNING"), n == 2 and c.claim("gtest", "101"))
    store = GroupStore(tmp_path)
    race = Race(c, entries(3), store=store, poll_interval=0.01)
    evs = await run(race)
    assert c.submits == 1
    assert c.files["/scratch/u/.rv/groups/gtest/jobs"] == "100\n101\n102\n"
    assert '"id": "gtest"' in c.files["/scratch/u/.rv/groups/gtest/group.json"]
    assert race.result.winner_id == "101"
    assert c.cancels == [["100", "102"]]  # one call, every loser
    kinds = [e.kind for e in evs]
    assert kinds.count(RaceEventKind.SUBMITTED) == 3 and RaceEventKind.WINNER in kinds
    assert kinds.index(RaceEventKind.WINNER) < kinds.index(RaceEventKind.CANCELLED)
    saved = store.get("gtest")
    assert saved.winner == "101" and saved.state == "won"


async def test_two_started_trusts_the_claim_not_the_order():
    """Both start in one cycle; the later-ranked, later-started one holds the claim: it wins."""
    c = Scripted()

    def poll(n):
        if n == 1:
            c.set("100", "RUNNING", 0)
            c.set("101", "RUNNING", 5)
            c.claim("gtest", "101")
    c.on_poll = poll
    race = Race(c, entries(2), poll_interval=0.01)
    await run(race)
    assert race.result.winner_id == "101"
    assert c.cancels == [["100"]]


async def test_started_but_unclaimed_waits_for_the_claim():
    """A job seen running before it claimed is not declared winner; the claim decides."""
    c = Scripted()

    def poll(n):
        if n == 1:
            c.set("100", "RUNNING", 0)
        if n == 4:  # the other job claimed first (it started a moment later)
            c.set("101", "RUNNING", 1)
            c.claim("gtest", "101")
    c.on_poll = poll
    race = Race(c, entries(2), poll_interval=0.01)
    await run(race)
    assert race.result.winner_id == "101"
    assert all("101" not in call for call in c.cancels)


async def test_fast_winner_finished_between_polls():
    c = Scripted()

    def poll(n):
        if n == 1:
            c.set("100", "COMPLETED", 0, exit_code=0)
            c.set("101", "RUNNING", 1)  # a loser that found the claim and is exiting
            c.claim("gtest", "100")
    c.on_poll = poll
    race = Race(c, entries(3), poll_interval=0.01)
    await run(race)
    assert race.result.winner_id == "100"
    assert c.cancels == [["101", "102"]]


async def test_claimless_falls_back_to_earliest_start():
    c = Scripted()
    c.on_poll = lambda n: n == 1 and (c.set("100", "RUNNING", 9), c.set("101", "RUNNING", 2))
    race = Race(c, entries(2), poll_interval=0.01, claims=False)
    await run(race)
    assert race.result.winner_id == "101"


async def test_submit_failures_and_all_failed():
    c = Scripted(fail=[0])
    # the one submitted job is cancelled by someone else before it starts
    c.on_poll = lambda n: n == 1 and c.states.update({"100": JobInfo("100", "t", "u", "CANCELLED", "p1")})
    race = Race(c, entries(2), poll_interval=0.01)
    evs = await run(race)
    kinds = [e.kind for e in evs]
    assert kinds[:2] == [RaceEventKind.SUBMIT_FAILED, RaceEventKind.SUBMITTED]
    assert "QOSMaxGRESPerUser" in evs[0].message
    assert RaceEventKind.FAILED in kinds
    assert kinds[-1] is RaceEventKind.NO_WINNER
    assert race.result.outcome == "no_winner"


async def test_after_submit_gets_every_id_once_and_its_problem_becomes_a_note():
    c = Scripted()
    c.on_poll = lambda n: n == 1 and c.states.update({"101": JobInfo("101", "t", "u", "CANCELLED", "p1")})
    calls: list[list[str]] = []

    async def after(ids: list[str]) -> str | None:
        calls.append(ids)
        return "snapshot record failed"

    race = Race(c, entries(2), poll_interval=0.01, timeout=0.5, after_submit=after)
    evs = await run(race)
    assert calls == [race.job_ids] and len(calls[0]) == 2
    notes = [e.message for e in evs if e.kind is RaceEventKind.NOTE]
    assert "snapshot record failed" in notes


async def test_pending_events_carry_reason_and_eta():
    c = Scripted()
    eta = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def poll(n):
        if n == 2:
            c.states["100"] = JobInfo("100", "t", "u", "PENDING", "p0", reason="Resources", start_time=eta)
        if n == 3:
            c.set("100", "RUNNING")
            c.claim("gtest", "100")
    c.on_poll = poll
    evs = await run(Race(c, entries(1), poll_interval=0.01))
    pend = [e for e in evs if e.kind is RaceEventKind.PENDING]
    assert [e.reason for e in pend] == ["Priority", "Resources"]  # only changes are reported
    assert pend[1].eta == eta and pend[1].reason_text == "waiting for resources"


async def test_timeout_cancels_everything():
    c = Scripted()
    race = Race(c, entries(3), poll_interval=0.01, timeout=0.1)
    evs = await run(race)
    assert evs[-1].kind is RaceEventKind.TIMEOUT
    assert sorted(sum(c.cancels, [])) == ["100", "101", "102"]
    assert all(i.state == "CANCELLED" for i in c.states.values())


async def test_timeout_with_leave_keeps_jobs():
    c = Scripted()
    race = Race(c, entries(2), poll_interval=0.01, timeout=0.05, leave=True)
    await run(race)
    assert c.cancels == []
    assert race.result.outcome == "left"


async def test_ctrl_c_mid_race_cancels_submitted():
    """A task cancelled while racing (what Ctrl-C does under asyncio.run) cancels its jobs."""
    c = Scripted()
    race = Race(c, entries(2), poll_interval=0.01)

    async def consume():
        async with race:
            async for _ in race:
                pass
    task = asyncio.create_task(consume())
    while c.polls < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(sum(c.cancels, [])) == ["100", "101"]
    assert race.result.outcome == "aborted"


async def test_error_in_consumer_cancels():
    c = Scripted()
    race = Race(c, entries(2), poll_interval=0.01)
    with pytest.raises(RuntimeError):
        async with race:
            async for ev in race:
                if ev.kind is RaceEventKind.PENDING:
                    raise RuntimeError("boom")
    assert sorted(sum(c.cancels, [])) == ["100", "101"]


async def test_read_claim_owner_ignores_foreign_ids():
    c = Scripted()
    c.files["/scratch/u/.rv/groups/g/claim/owner"] = "999"
    assert await read_claim_owner(c, "g", ["100"]) is None
    c.files["/scratch/u/.rv/groups/g/claim/owner"] = "100"
    assert await read_claim_owner(c, "g", ["100", "101"]) == "100"
    del c.files["/scratch/u/.rv/groups/g/claim/owner"]
    c.files["/scratch/u/.rv/groups/g/claim"] = "101\n"  # the demo keeps the owner in a file
    assert await read_claim_owner(c, "g", ["100", "101"]) == "101"
