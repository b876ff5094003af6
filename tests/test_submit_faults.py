"""Faults around submission, on the real test cluster: each case asserts 0 double runs, 0 lost runs
and 0 orphaned jobs.

* the SSH connection is killed in the middle of the sbatch batch (the server side of our own
  session dies after the first sbatch): rv never re-sends sbatch; once reconnected it finds the
  group's jobs by their ``rvgroup:`` comment and races those, so no second group exists and the
  command runs once (before the fix the race died with the connection error, leaving the jobs
  it had submitted unknown to rv, and a retry submitted a second group);
* ``rv run -f`` killed with SIGKILL right after submitting: the on-cluster claim still runs the
  command once and the winner cancels its siblings; nothing stays queued.
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
from pathlib import Path

import pytest

from rv_tui.quoting import q

ROOT = Path(__file__).resolve().parent.parent

#: Shell that kills the sshd process serving this very session (walks up the process tree).
KILL_OWN_SESSION = ('_p=$$; while [ "${_p:-1}" -gt 1 ]; do '
                    '[ "$(ps -o comm= -p "$_p" | tr -d " ")" = sshd ] && { kill -9 "$_p"; break; }; '
                    '_p=$(ps -o ppid= -p "$_p" | tr -d " "); done')


def _local_squeue(conf: str, comment: str) -> list[tuple[str, str]]:
    """(job id, state) of every job carrying ``comment``, any state, asked as root locally."""
    out = subprocess.run(["squeue", "-h", "-a", "-t", "all", "-o", "%i %T %k"], capture_output=True,
                         text=True, env={**os.environ, "SLURM_CONF": conf}, timeout=60).stdout
    return [(p[0], p[1]) for p in (ln.split() for ln in out.splitlines()) if len(p) >= 3 and p[2] == comment]


@pytest.mark.cluster
async def test_ssh_killed_during_submission_submits_no_second_group(rv_home, own_jobs, slurm_cluster,
                                                                    monkeypatch) -> None:
    from rv_tui.allocator.race import Race, RaceEventKind
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config
    from rv_tui.jobs.store import GroupStore, new_group_id
    from rv_tui.slurm import builders
    from test_race import make_entries, strategy, wait_all_ended

    real = builders.submit_command
    calls = {"n": 0}

    def dying_submit(path: str) -> str:
        calls["n"] += 1
        cmd = real(path)
        return f"{KILL_OWN_SESSION}; {cmd}" if calls["n"] == 2 else cmd  # the 2nd sbatch of 3

    monkeypatch.setattr(builders, "submit_command", dying_submit)
    cluster = SshCluster.from_config(load_config())
    await cluster.connect()
    gid = new_group_id()
    marker = f"{slurm_cluster.scratch}/ssh-fault-{uuid.uuid4().hex}"
    strategies = [strategy(t, gpn=1) for t in ("v100", "a40", "a6000")]
    entries = make_entries(cluster, strategies, f"echo $SLURM_JOB_ID >> {q(marker)}; sleep 3", gid)
    race = Race(cluster, entries, group_id=gid, store=GroupStore(), poll_interval=0.5, timeout=180)
    events = []
    try:
        async with race:
            async for ev in race:
                events.append(ev)
        monkeypatch.setattr(builders, "submit_command", real)
        assert race.result.winner_id is not None, [e.describe() for e in events]
        final = await wait_all_ended(cluster, race.job_ids, timeout=120)
        runs = (await cluster.read_file(marker)).decode().split()
    finally:
        await cluster.close()
    assert calls["n"] >= 2  # the fault was injected
    notes = [e.message for e in events if e.kind is RaceEventKind.NOTE]
    assert any("connection dropped during submission" in n for n in notes), notes
    on_cluster = dict(_local_squeue(slurm_cluster.slurm_conf, f"rvgroup:{gid}"))
    assert set(race.job_ids) <= set(on_cluster), (on_cluster, race.job_ids)
    assert len(on_cluster) <= len(strategies)  # nothing submitted twice, no second group
    # a sibling rv did not see (it landed after the drop) was cancelled by the on-cluster winner
    unseen = {j: s for j, s in on_cluster.items() if j not in race.job_ids}
    assert all(s == "CANCELLED" for s in unseen.values()), unseen
    assert runs == [race.result.winner_id]  # one run, not lost
    assert not [s for s in on_cluster.values() if s in ("PENDING", "RUNNING")], on_cluster
    assert final[race.result.winner_id].state == "COMPLETED"


@pytest.mark.cluster
def test_rv_run_follow_killed_after_submit_runs_once(rv_home, own_jobs, slurm_cluster, tmp_path) -> None:
    work = tmp_path / "not-a-project"
    work.mkdir()
    marker = f"{slurm_cluster.scratch}/sigkill-{uuid.uuid4().hex}"
    env = {**os.environ, "RV_HOME": str(rv_home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rv_tui.cli.main", "run", "-f", "-g", "1",
                             "--time", "10m", "--max-strategies", "3", "--",
                             f"echo $SLURM_JOB_ID >> {marker}; sleep 5"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    groups = rv_home / "groups"
    deadline = time.monotonic() + 120
    rec = None
    while time.monotonic() < deadline and proc.poll() is None:
        files = list(groups.glob("*.json")) if groups.is_dir() else []
        if files:
            rec = json.loads(files[0].read_text())
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # right after the group (every job id) was recorded
    proc.wait(timeout=30)
    assert rec is not None, proc.stderr.read() if proc.stderr else ""
    ids = [j["job_id"] for j in rec["jobs"] if j["job_id"]]
    assert len(ids) >= 2, rec
    comment = f"rvgroup:{rec['id']}"
    deadline = time.monotonic() + 120
    jobs = _local_squeue(slurm_cluster.slurm_conf, comment)
    while time.monotonic() < deadline and any(s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
                                              for _, s in jobs):
        time.sleep(0.5)
        jobs = _local_squeue(slurm_cluster.slurm_conf, comment)
    assert sorted(j for j, _ in jobs) == sorted(ids), (jobs, ids)  # nothing unknown, nothing twice
    assert not [s for _, s in jobs if s in ("PENDING", "RUNNING", "CONFIGURING")], jobs  # no orphans
    runs = Path(marker).read_text().split()
    assert len(runs) == 1 and runs[0] in ids, runs  # exactly one run
    assert dict(jobs)[runs[0]] == "COMPLETED"


# ----------------------------------------------------------------------------- matching (unit)

def _sub(partition: str, gpus: int = 1, wall: int = 600):
    from rv_tui.cluster.base import JobSubmission

    return JobSubmission(script="", name="n", partition=partition, nodes=1, gpus_per_node=gpus,
                         gpu_type="x", walltime_s=wall, group_id="g1")


class _Listing:
    """The Cluster calls recover_submission makes: the queue listing and the claim file."""

    name, user, scratch, is_demo = "t", "u", "/s", False

    def __init__(self, infos, owner: str = "") -> None:  # noqa: ANN001
        self.infos, self.owner, self.failures = infos, owner, 0

    async def jobs(self, ids=None, **kw):  # noqa: ANN001, ANN003
        if self.failures:
            self.failures -= 1
            raise ConnectionError("reconnecting")
        return self.infos

    async def exec(self, command: str, *, timeout=None):  # noqa: ANN001
        from rv_tui.cluster.base import ExecResult

        return ExecResult(command, 0, self.owner, "")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(deadline=None, max_examples=60)
@given(st.lists(st.sampled_from(["gpu-v100", "gpu-a40", "gpu-a6000"]), min_size=1, max_size=6),
       st.data())
def test_recovered_jobs_map_one_to_one_onto_their_strategies(parts: list[str], data) -> None:  # noqa: ANN001
    from rv_tui.cluster.base import JobInfo
    from rv_tui.jobs.store import LOST_SUBMISSION, recover_submission

    subs = [_sub(p) for p in parts]
    landed = sorted(data.draw(st.sets(st.sampled_from(range(len(subs))))))
    infos = [JobInfo(str(1000 + i), "n", "u", "PENDING", subs[i].partition, gres="gpu:x:1",
                     time_limit_s=600, comment="rvgroup:g1") for i in landed]
    infos.append(JobInfo("5", "n", "u", "RUNNING", "gpu-v100", comment="rvgroup:other"))  # not ours
    cluster = _Listing(infos)
    cluster.failures = data.draw(st.integers(0, 2))  # the first listings fail while reconnecting
    res = asyncio.run(recover_submission(cluster, "g1", subs, settle=0, retry_every=0))  # type: ignore[arg-type]
    if not landed:
        assert res is None
        return
    assert res is not None and len(res) == len(subs)
    got = [r.job_id for r in res if r.ok]
    assert sorted(got) == sorted(str(1000 + i) for i in landed)  # each found job once, none invented
    for r in res:
        if r.ok:
            assert r.submission.partition == next(i.partition for i in infos if i.job_id == r.job_id)
        else:
            assert r.error == LOST_SUBMISSION


def test_a_winner_that_already_finished_is_found_by_its_claim() -> None:
    from rv_tui.jobs.store import recover_submission

    res = asyncio.run(recover_submission(_Listing([], owner="1007\n"), "g1", [_sub("gpu-v100"), _sub("gpu-a40")],
                                         settle=0))  # type: ignore[arg-type]
    assert res is not None and [r.job_id for r in res] == ["1007", None]
