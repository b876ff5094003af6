"""The demo cluster persists between ``rv --demo`` commands, like a real cluster does.

End to end in subprocesses (each ``python -m rv_tui`` is a fresh process, as for a user): a job
submitted by ``rv --demo run`` is listed by ``rv --demo ps``, its lines are printed by
``rv --demo logs``, ``rv --demo stop`` cancels it; a damaged state file means a fresh start with one
notice, never a crash.  In-process tests pin the rules: saved state resumes mid-job with exactly the
output an uninterrupted run would print, the clock catches up by real time x speed (capped), and
speed=0 / persist=False never touch the disk.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rv_tui.cluster.base import JobSubmission
from rv_tui.cluster.demo import DemoCluster
from rv_tui.cluster.demo import persist

LOGS = "/scratch/demo1a/.rv/logs"
TIMINGS: dict[str, float] = {}


def rv(home: Path, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rv_tui", "--demo", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or home.parent,
                          env={**os.environ, "RV_HOME": str(home), **(env or {})})
    TIMINGS[" ".join(argv[:3])] = time.perf_counter() - start
    return proc


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()  # not a project: rv run must not sync a checkout
    return tmp_path / "work" / "rv-home"


def state_file(home: Path) -> Path:
    return home / "demo" / "state.pickle"


def ps(home: Path, *extra: str) -> dict:
    p = rv(home, "ps", "--json", *extra)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_run_then_ps_logs_stop_across_processes(home: Path) -> None:
    p = rv(home, "--seed", "11", "run", "--json", "-g", "1", "-t", "a6000", "--", "python", "train.py")
    assert p.returncode == 0, p.stderr
    sub = json.loads(p.stdout)
    gid, (jid,) = sub["group_id"], sub["job_ids"]
    st = state_file(home)
    assert st.exists() and st.stat().st_mode & 0o777 == 0o600

    listed = ps(home)
    (group,) = [g for g in listed["groups"] if g["group_id"] == gid]
    (job,) = group["jobs"]
    assert job["job_id"] == jid and job["state"] in ("PENDING", "RUNNING")

    # a faster clock for this command: the job runs to its end while we follow it
    p = rv(home, "--speed", "1200", "logs", jid)
    assert p.returncode == 0, p.stderr
    assert f"[rv] race group {gid}: claimed by job {jid}" in p.stdout
    assert "[rv] command: python train.py" in p.stdout
    assert "training done" in p.stdout and "loss" in p.stdout
    assert "COMPLETED" in p.stderr

    # and the next command still sees it finished, with the same file
    p = rv(home, "logs", jid)
    assert p.returncode == 0, p.stderr
    assert "training done" in p.stdout

    # a second job, cancelled from another process
    p = rv(home, "run", "--json", "-g", "1", "-t", "a6000", "--", "python", "train.py")
    assert p.returncode == 0, p.stderr
    (jid2,) = json.loads(p.stdout)["job_ids"]
    assert int(jid2) > int(jid)  # job ids continue, as on one cluster
    p = rv(home, "stop", jid2, "-y")
    assert p.returncode == 0, p.stderr
    assert jid2 in p.stdout
    states = {j["job_id"]: j["state"] for g in ps(home, "-a")["groups"] for j in g["jobs"]}
    assert states[jid2] == "CANCELLED"
    assert states[jid] == "COMPLETED"
    assert jid2 not in {j["job_id"] for g in ps(home)["groups"] for j in g["jobs"]}


def test_corrupt_state_starts_fresh_with_one_notice(home: Path) -> None:
    p = rv(home, "run", "--json", "-g", "1", "-t", "a6000", "--", "python", "train.py")
    assert p.returncode == 0, p.stderr
    st = state_file(home)
    head = st.read_bytes().partition(b"\n")[0]
    for damaged in (b"garbage", head + b"\n" + b"\x80\x05not a pickle", b""):
        st.write_bytes(damaged)
        st.chmod(0o600)
        p = rv(home, "ps", "--json")
        assert p.returncode == 0, p.stderr
        notices = [ln for ln in p.stderr.splitlines() if ln.startswith("rv: demo:")]
        assert len(notices) == 1 and "fresh simulation" in notices[0], p.stderr
        assert "Traceback" not in p.stderr
        # the fresh cluster was saved again, intact
        assert st.read_bytes().startswith(b'{"format"')


def saved_jobs(home: Path) -> tuple[int, set[int]]:
    loaded = persist.load(state_file(home), seed=None, user="demo1a", background=True)
    assert loaded is not None
    return loaded.seed, {jid for jid, j in loaded.sim.jobs.items() if j.submission is not None}


def test_same_seed_resumes_other_seed_or_reset_starts_fresh(home: Path) -> None:
    p = rv(home, "--seed", "5", "run", "--json", "-g", "1", "-t", "a6000", "--", "python", "train.py")
    assert p.returncode == 0, p.stderr
    (jid,) = json.loads(p.stdout)["job_ids"]
    assert saved_jobs(home) == (5, {int(jid)})

    for same in (["--seed", "5"], []):  # the saved seed, or none given: resume
        p = rv(home, *same, "ps", "--json")
        assert p.returncode == 0 and "rv: demo:" not in p.stderr, p.stderr
        assert int(jid) in saved_jobs(home)[1]

    p = rv(home, "--seed", "6", "ps", "--json")
    assert p.returncode == 0 and "differs from the saved simulation's seed 5" in p.stderr
    seed, jobs = saved_jobs(home)
    assert (seed, jobs) == (6, set())

    p = rv(home, "--seed", "6", "run", "--json", "-g", "1", "-t", "a6000", "--", "python", "x.py")
    assert p.returncode == 0, p.stderr
    assert saved_jobs(home)[1] == {int(j) for j in json.loads(p.stdout)["job_ids"]} != set()
    p = rv(home, "--seed", "6", "ps", "--json", env={persist.RESET_ENV: "1"})
    assert p.returncode == 0 and f"{persist.RESET_ENV} is set" in p.stderr
    assert saved_jobs(home) == (6, set())


# ----------------------------------------------------------------------------- in process


def submission(command: str = "python train.py") -> JobSubmission:
    return JobSubmission(script="#!/bin/bash\n", name="rv-persist", partition="gpu-a6000", nodes=2,
                         gpus_per_node=4, gpu_type="a6000", walltime_s=10740, command=command,
                         stdout_path=f"{LOGS}/%x-%j.out", stderr_path=f"{LOGS}/%x-%j.err")


def rewind(path: Path, seconds: float) -> None:
    """Pretend the state was saved *seconds* ago (rewrite the header's wall-clock stamp)."""
    head, _, body = path.read_bytes().partition(b"\n")
    header = json.loads(head)
    header["saved_at"] -= seconds
    path.write_bytes(json.dumps(header).encode() + b"\n" + body)


async def test_pickled_mid_job_replays_exactly_the_same_output() -> None:
    """A job's output continues after a save/load as if nothing happened (programs replay)."""
    a = DemoCluster(seed=21, speed=0)
    (res,) = await a.submit([submission()])
    a.advance(90)
    info = (await a.jobs([res.job_id]))[0]
    assert info.state == "RUNNING" and a.sim.jobs[int(res.job_id)].program.lines.consumed > 0
    b_sim = pickle.loads(pickle.dumps(a.sim))
    a.advance(3600)
    b_sim.advance_to(a.sim.t)
    files = sorted(p for p in a.sim.fs.files if f"-{res.job_id}." in p)
    assert len(files) >= 4  # sbatch-level + per-node files of a 2-node job
    for p in files:
        assert b_sim.fs.read(p) == a.sim.fs.read(p), p
    assert b_sim.jobs[int(res.job_id)].state == a.sim.jobs[int(res.job_id)].state == "COMPLETED"


async def test_resume_continues_the_clock_and_caps_catch_up(tmp_path: Path) -> None:
    a = DemoCluster(seed=3, speed=30, persist=tmp_path)
    (res,) = await a.submit([submission("sleep 100000")])
    await a.close()
    saved_t = a.sim.t
    path = tmp_path / "state.pickle"
    assert path.exists()

    rewind(path, 60)  # one real minute at 30x: half an hour of simulated time
    start = time.perf_counter()
    b = DemoCluster(speed=30, persist=tmp_path)
    TIMINGS["resume after 1 min"] = time.perf_counter() - start
    assert b.seed == 3 and b.resumed is not None
    assert 1800 <= b.sim.t - saved_t < 1800 + 60  # plus the real seconds this test took
    [info] = await b.jobs([res.job_id])
    assert info.state == "RUNNING" and info.elapsed_s >= 1800
    await b.close()

    rewind(path, 10 * 86400)  # ten days away: 24 h are simulated, the rest is jumped over
    start = time.perf_counter()
    c = DemoCluster(speed=30, persist=tmp_path)
    TIMINGS["resume after 10 days"] = time.perf_counter() - start
    assert c.resumed is not None
    replayed, skipped = c.resumed
    assert replayed == persist.MAX_CATCHUP_S and skipped > 10 * 86400 * 30 - persist.MAX_CATCHUP_S - 1
    [info] = await c.jobs([res.job_id])
    assert info.state == "TIMEOUT"  # its 2:59 limit passed during the catch-up


async def test_frozen_or_unpersisted_clusters_never_touch_the_disk(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RV_HOME", str(tmp_path / "home"))
    for c in (DemoCluster(seed=1, speed=0, persist=True), DemoCluster(seed=1, speed=30),
              DemoCluster(seed=1, speed=0, persist=tmp_path)):
        await c.submit([submission()])
        await c.close()
        assert c.state_path is None
    assert not (tmp_path / "home").exists() and not (tmp_path / "state.pickle").exists()
    # persist=True goes to rv_home()/demo/
    c = DemoCluster(seed=1, speed=30, persist=True)
    await c.close()
    assert (tmp_path / "home" / "demo" / "state.pickle").exists()


async def test_state_of_another_user_or_loose_permissions_is_not_loaded(tmp_path: Path, capsys) -> None:
    a = DemoCluster(seed=4, speed=30, persist=tmp_path)
    await a.submit([submission()])
    await a.close()
    path = tmp_path / "state.pickle"
    path.chmod(0o666)
    b = DemoCluster(speed=30, persist=tmp_path)
    assert b.resumed is None and "not a private file" in capsys.readouterr().err
    await b.close()  # rewritten private
    assert path.stat().st_mode & 0o777 == 0o600
    c = DemoCluster(speed=30, persist=tmp_path, user="other1x")
    assert c.resumed is None


async def test_two_sessions_at_once_last_close_wins_and_says_so(tmp_path: Path, capsys) -> None:
    tui = DemoCluster(seed=8, speed=30, persist=tmp_path)
    cli = DemoCluster(seed=8, speed=30, persist=tmp_path)
    (res,) = await cli.submit([submission()])
    await cli.close()
    assert "another demo session" not in capsys.readouterr().err
    await tui.close()
    assert "another demo session saved while this one ran" in capsys.readouterr().err
    again = DemoCluster(speed=30, persist=tmp_path)
    assert int(res.job_id) not in again.sim.jobs or again.sim.jobs[int(res.job_id)].submission is None


def test_report_timings() -> None:
    """Not an assertion on speed: prints what the CLI round trips cost (see the report)."""
    print("\n" + "\n".join(f"  {k}: {v * 1000:.0f} ms" for k, v in TIMINGS.items()))
