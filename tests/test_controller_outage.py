"""Controller outages: while slurmctld restarts, squeue and scontrol answer nothing, and that must
read as "unknown, keep asking", never as "the job vanished".

Unit part: the error classification on the exact lines Slurm 22.05 prints (recorded from the test
cluster), as a property too.  Cluster part (real slurmctld restarts of ~15 s, serialised through
tests/cluster/faults.py): ``rv run -f`` follows its job through the outage and exits with the
job's own exit code; a race whose jobs are pending through the outage still runs the command
exactly once and leaves nothing queued; the hardware retry never re-races a job whose state it
does not know.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rv_tui.cluster.base import ControllerUnavailable, JobInfo
from rv_tui.slurm.parsers import job_query_errors

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))
import faults  # noqa: E402

UNREACHABLE = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
TIMED_OUT = "slurm_load_jobs error: Socket timed out on send/recv operation"
INVALID = "slurm_load_jobs error: Invalid job id specified"
RECORD = ("JobId=1000089 JobName=h5-timeout UserId=rvtest(1001) JobState=RUNNING Reason=None "
          "Restarts=2 Comment=rvgroup:gabc")


# ----------------------------------------------------------------------------- classification

def test_controller_errors_are_not_invalid_ids() -> None:
    assert job_query_errors(UNREACHABLE) == [UNREACHABLE]
    assert job_query_errors(TIMED_OUT) == [TIMED_OUT]
    assert job_query_errors(f"{INVALID}\n{INVALID}\n") == []
    assert job_query_errors(f"{RECORD}\n{INVALID}\n") == []
    assert job_query_errors(f"{RECORD}\n{UNREACHABLE}\n") == [UNREACHABLE]
    assert job_query_errors("squeue: error: Invalid job id specified") == []


@given(st.lists(st.sampled_from([UNREACHABLE, TIMED_OUT, INVALID, RECORD, "", "   "]), max_size=8))
def test_classification_property(lines: list[str]) -> None:
    """Errors found == the controller lines, in order; records and invalid ids never count."""
    expected = [ln for ln in lines if ln in (UNREACHABLE, TIMED_OUT)]
    assert job_query_errors("\n".join(lines)) == expected


def test_scontrol_restart_count_is_parsed() -> None:
    from zoneinfo import ZoneInfo

    from rv_tui.slurm.parsers import parse_restart_counts, parse_scontrol_jobs
    from rv_tui.slurm.builders import SEP

    (info,) = parse_scontrol_jobs(RECORD, ZoneInfo("UTC"))
    assert info.restart_count == 2 and info.comment == "rvgroup:gabc"
    assert parse_restart_counts(f"1000089{SEP}3{SEP}\n1000090{SEP}0{SEP}\nbogus\n") == {
        "1000089": 3, "1000090": 0}


class _FlakyController:
    """A stand-in for the Cluster in the follower's own unit test: answers, then goes silent for
    a few polls (as squeue does while slurmctld restarts), then reports the job's real end."""

    name = "flaky"
    user = "u"
    scratch = "/nonexistent"
    is_demo = False

    def __init__(self, silent: tuple[range, ...] = (range(2, 9),), end_at: int = 10) -> None:
        self.calls = 0
        self.silent = silent
        self.end_at = end_at

    async def jobs(self, ids=None, **kw):  # noqa: ANN001, ANN003
        self.calls += 1
        if any(self.calls in r for r in self.silent):
            raise ControllerUnavailable(UNREACHABLE)
        state = "RUNNING" if self.calls < self.end_at else "FAILED"
        return [JobInfo("42", "n", "u", state, "p", exit_code=3 if state == "FAILED" else None)]


async def test_follow_waits_through_silence_instead_of_declaring_the_job_gone() -> None:
    """Without the fix three unanswered polls ended the follow with UNKNOWN/exit 1."""
    import importlib

    from rv_tui.logs.events import JobEnded, JobStatus

    F = importlib.import_module("rv_tui.logs.follow")  # the module (rv_tui.logs.follow is also a function)
    from rv_tui.logs.locate import JobLogs

    cluster = _FlakyController()
    info = JobInfo("42", "n", "u", "RUNNING", "p")
    events = [ev async for ev in F.follow(cluster, "42", poll=0.01, drain_quiet=0.01, chain=False,  # type: ignore[arg-type]
                                          known=(info, JobLogs("42", "n", 0, ())))]
    ended = events[-1]
    assert isinstance(ended, JobEnded) and (ended.state, ended.exit_code) == ("FAILED", 3)
    unknown = [e for e in events if isinstance(e, JobStatus) and e.state == F.UNREACHABLE]
    assert len(unknown) == 1  # said once, not once per poll


async def test_follow_through_two_outages_and_an_end_inside_one() -> None:
    """Same event twice, and the worst moment: two silent windows, the job ends in the second;
    each outage is said once, the end is the real one (no 'vanished' after 3 silent polls)."""
    import importlib

    from rv_tui.logs.events import JobEnded, JobStatus
    from rv_tui.logs.locate import JobLogs

    F = importlib.import_module("rv_tui.logs.follow")
    cluster = _FlakyController(silent=(range(2, 6), range(7, 15)), end_at=7)
    info = JobInfo("42", "n", "u", "RUNNING", "p")
    events = [ev async for ev in F.follow(cluster, "42", poll=0.01, drain_quiet=0.01, chain=False,  # type: ignore[arg-type]
                                          known=(info, JobLogs("42", "n", 0, ())))]
    assert isinstance(events[-1], JobEnded) and (events[-1].state, events[-1].exit_code) == ("FAILED", 3)
    states = [e.state for e in events if isinstance(e, JobStatus)]
    assert states.count(F.UNREACHABLE) == 2, states


# ----------------------------------------------------------------------------- real cluster

def _restart_when(path: Path, result: dict, down_s: float = 15.0, timeout: float = 180.0) -> threading.Thread:
    """A thread that restarts slurmctld once ``path`` exists (the job has started)."""

    def go() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not path.exists():
            time.sleep(0.2)
        if not path.exists():
            result["error"] = f"{path} never appeared"
            return
        result["started_at"] = time.monotonic()
        result["down_s"] = faults.restart_slurmctld(down_s)
        result["up_at"] = time.monotonic()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize(("sleep_s", "rc"), [(45, 3), (3, 4)], ids=["ends-after", "ends-during-outage"])
def test_run_follow_survives_slurmctld_restart(capsys, rv_home, own_jobs, tmp_path, monkeypatch,
                                               slurm_cluster, sleep_s: int, rc: int) -> None:
    """rv run -f through a 15 s slurmctld restart: same job, its own exit code, one run; also when
    the job ends while the controller is away (its end reaches Slurm only after the restart).
    Before the fix it printed 'finished: UNKNOWN (exit 1)' a few seconds into the outage."""
    from rv_tui.cli.main import main as rv_main

    work = tmp_path / "not-a-project"
    work.mkdir()
    monkeypatch.chdir(work)
    tag = uuid.uuid4().hex
    marker = Path(slurm_cluster.scratch) / f"outage-{tag}"
    cmd = f"echo $SLURM_JOB_ID >> {marker}; sleep {sleep_s}; echo done >> {marker}; exit {rc}"
    result: dict = {}
    t = _restart_when(marker, result)
    code = rv_main(["run", "-f", "-g", "1", "-t", "v100", "--time", "10m", "--wait-timeout", "5m",
                    "--max-strategies", "1", "--json", "--", cmd])
    out, err = capsys.readouterr()
    t.join(timeout=120)
    assert "error" not in result, result
    assert result.get("down_s", 0) >= 15, result  # the outage really happened ...
    assert code == rc, (out, err)
    res = json.loads(out)
    lines = marker.read_text().split()
    assert lines[-1] == "done", lines  # ... while the job ran: it wrote 'done' after it
    assert res["state"] == "FAILED" and res["exit_code"] == rc, res
    assert lines == [res["winner"], "done"]  # exactly one run


@pytest.mark.cluster
@pytest.mark.slow
async def test_race_survives_slurmctld_restart(rv_home, own_jobs, slurm_cluster) -> None:
    """A race whose jobs are held through a slurmctld restart: it keeps polling (one note), and
    after one `scontrol release` of all of them the command runs exactly once, nothing stays
    queued and every loser ends."""
    from rv_tui.allocator.race import Race, RaceEventKind
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config
    from rv_tui.jobs.store import GroupStore, new_group_id
    from rv_tui.quoting import join, q
    from test_race import make_entries, strategy, wait_all_ended

    cluster = SshCluster.from_config(load_config())
    await cluster.connect()
    gid = new_group_id()
    marker = f"{slurm_cluster.scratch}/race-outage-{uuid.uuid4().hex}"
    strategies = [strategy(t, gpn=1) for t in ("v100", "a40", "a6000")]
    strategies = [replace(s, sbatch_options=("--hold",)) for s in strategies]
    entries = make_entries(cluster, strategies, f"echo $SLURM_JOB_ID >> {q(marker)}; sleep 2", gid)
    race = Race(cluster, entries, group_id=gid, store=GroupStore(), poll_interval=0.5, timeout=300)
    events = []
    fault: dict = {}

    async def outage_then_release() -> None:
        # take the controller away while the race polls, then release every job at once
        fault["down_s"] = await asyncio.to_thread(faults.restart_slurmctld, 15.0)
        res = await cluster.exec(join(["scontrol", "release", *race.job_ids]))
        fault["release"] = (res.exit_status, res.stderr)

    task = None
    try:
        async with race:
            async for ev in race:
                events.append(ev)
                submitted = sum(e.kind is RaceEventKind.SUBMITTED for e in events)
                if ev.kind is RaceEventKind.PENDING and submitted == len(entries) and task is None:
                    task = asyncio.create_task(outage_then_release())
        assert task is not None
        await task
        final = await wait_all_ended(cluster, race.job_ids, timeout=120)
        runs = (await cluster.exec(f"cat {q(marker)} 2>/dev/null; true")).stdout.split()
    finally:
        await cluster.close()
    story = ([e.describe() for e in events], {j: (i.state, i.reason) for j, i in final.items()})
    assert fault.get("down_s", 0) >= 15 and fault["release"][0] == 0, fault
    assert race.result.winner_id is not None, story
    assert runs == [race.result.winner_id], (runs, story)
    assert not [j for j in final.values() if j.state == "PENDING"]
    assert final[race.result.winner_id].state == "COMPLETED"
    notes = [e.message for e in events if e.kind is RaceEventKind.NOTE]
    assert any("did not answer" in m for m in notes), notes


async def test_hardware_retry_never_acts_on_an_unknown_state() -> None:
    """A job whose state Slurm cannot tell (controller down) is not diagnosed for a retry."""
    from rv_tui.jobs.retry import diagnose

    class Down:
        name, user, scratch, is_demo = "down", "u", "/x", False

        async def jobs(self, ids=None, **kw):  # noqa: ANN001, ANN003
            raise ControllerUnavailable(UNREACHABLE)

    d = await diagnose(Down(), "42", final_state="FAILED")  # type: ignore[arg-type]
    assert not d.retry and "unknown" in d.reason

    class Running(Down):
        async def jobs(self, ids=None, **kw):  # noqa: ANN001, ANN003
            return [JobInfo("42", "n", "u", "RUNNING", "p")]

    d = await diagnose(Running(), "42", final_state=None)  # type: ignore[arg-type]
    assert not d.retry and "has not ended" in d.reason
