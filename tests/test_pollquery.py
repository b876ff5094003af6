"""The dashboard's single job query (rv_tui.slurm.pollquery) against recorded real outputs.

One moment of the test cluster recorded both ways (tests/cluster/record_poll_fixture.py): the raw
``scontrol show job -o`` and the three squeue outputs it replaces. The awk part of the command
runs here, on each awk the login node might have, over the recorded scontrol output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rv_tui.slurm import parsers as p
from rv_tui.slurm import pollquery as pq

FIX = Path(__file__).parent / "fixtures" / "slurm"
USER = "rvtest"
AWKS = [a for a in ("awk", "mawk", "gawk", "nawk", "busybox") if shutil.which(a)]


def fx(name: str) -> str:
    return (FIX / name).read_text()


@pytest.fixture
def tz():
    return p.parse_clock(fx("h3_clock.txt")).tz


def run_awk(raw: str, user: str | None, awk: str = "awk") -> str:
    """The command's awk stage, locally, over ``raw`` (what ``scontrol show job -o`` printed)."""
    cmd = pq.poll_jobs_command(user)
    head = "scontrol show job -o | awk "
    assert cmd.startswith(head)
    prog = (["busybox", "awk"] if awk == "busybox" else [awk])
    r = subprocess.run(["sh", "-c", " ".join(prog) + " " + cmd[len(head):]], input=raw,
                       capture_output=True, text=True, check=True)
    return r.stdout


def squeue_view(tz) -> list:
    """What the dashboard got before: squeue -o jobs with squeue -O restart counts merged."""
    restarts = p.parse_restart_counts(fx("poll_squeue_restarts.txt"))
    return [replace(j, restart_count=restarts.get(j.job_id, 0))
            for j in p.parse_squeue_jobs(fx("poll_squeue_jobs.txt"), tz)]


@pytest.mark.parametrize("awk", AWKS)
def test_one_query_gives_what_three_squeues_gave(tz, awk):
    ans = pq.parse_poll(run_awk(fx("poll_scontrol_jobs.txt"), USER, awk), tz, USER)
    assert ans.ambiguous == ()
    assert sorted(ans.jobs, key=lambda j: j.job_id) == sorted(squeue_view(tz), key=lambda j: j.job_id)
    assert ans.queues == p.parse_queue_counts(fx("poll_squeue_queue.txt"))
    ids = {j.job_id for j in ans.jobs}
    assert any(re.fullmatch(r"\d+_\[1-3\]", i) for i in ids)  # the pending array, as squeue says it


def test_finished_jobs_left_out_and_not_counted(tz):
    """squeue's default listing has no finished jobs; scontrol keeps them for MinJobAge."""
    raw = fx("h3_scontrol_jobs.txt") + fx("poll_scontrol_jobs.txt")
    ans = pq.parse_poll(run_awk(raw, USER), tz, USER)
    assert ans.jobs is not None
    assert {j.job_id for j in ans.jobs} == {j.job_id for j in squeue_view(tz)}
    assert ans.queues == p.parse_queue_counts(fx("poll_squeue_queue.txt"))


def test_other_users_jobs_counted_not_listed(tz):
    raw = fx("poll_scontrol_jobs.txt")
    other = raw.replace("UserId=rvtest(", "UserId=rvother(")
    ans = pq.parse_poll(run_awk(other, USER), tz, USER)
    assert ans.jobs == []
    assert ans.queues == p.parse_queue_counts(fx("poll_squeue_queue.txt"))
    assert pq.parse_poll(other, tz, USER).jobs == []  # the parser re-checks the owner itself


def test_no_user_means_counts_only(tz):
    out = run_awk(fx("poll_scontrol_jobs.txt"), None)
    assert not any(line.startswith("JobId=") for line in out.splitlines())
    assert pq.parse_poll(out, tz, USER).queues == p.parse_queue_counts(fx("poll_squeue_queue.txt"))


def _lines() -> list[str]:
    return [ln for ln in fx("poll_scontrol_jobs.txt").splitlines() if ln.startswith("JobId=")]


FAKES = st.sampled_from([" UserId=rvtest(1002)", " UserId=evil(", " JobState=RUNNING", " Partition=x",
                         " NumNodes=9", " TresPerNode=gres:gpu:8", " Restarts=7", " JobId=1",
                         " Comment=z", " NodeList=n1", " ArrayJobId=5 ArrayTaskId=2", ""])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(line=st.sampled_from(_lines()), before=TEXT, fake=FAKES, after=TEXT,
       owner=st.sampled_from(["rvtest", "rvother"]), field=st.sampled_from(["JobName", "Comment"]))
def test_free_text_never_fakes_a_job(line, before, fake, after, owner, field):
    """A job name or comment with key-like text: the job is listed exactly as named, for its
    real owner only, or the answer says "ambiguous" (the caller then asks squeue)."""
    if owner != USER:
        line = line.replace("UserId=rvtest(", f"UserId={owner}(")
    text = before + fake + after
    if "\n" in text or "\r" in text:
        return
    if field == "JobName":
        line = re.sub(r" JobName=.*? UserId=", lambda _m: f" JobName={text} UserId=", line, count=1)
    else:  # a comment: put one before StdErr (the recorded line may have none)
        line = re.sub(r" Comment=.*? StdErr=| StdErr=", lambda _m: f" Comment={text} StdErr=", line,
                      count=1)
    from datetime import timezone

    ans = pq.parse_poll(line, timezone.utc, USER)
    if ans.ambiguous:  # the caller asks squeue about this id alone
        assert ans.jobs == [] and ans.ambiguous == (re.match(r"JobId=(\d+)", line).group(1),)
        return
    if owner != USER:
        assert ans.jobs == []
        return
    assert len(ans.jobs) == 1
    job = ans.jobs[0]
    if field == "JobName":
        assert job.name == text.strip() or job.name == text
    assert job.user == USER


def test_ambiguous_line_says_so(tz):
    line = _lines()[0].replace("JobName=", "JobName=x UserId=rvtest(1002) y", 1)
    assert pq.trusted_line(_lines()[0])
    assert not pq.trusted_line(line)
    ans = pq.parse_poll(line + "\n" + _lines()[1], tz, USER)
    assert ans.ambiguous == (re.match(r"JobId=(\d+)", line).group(1),)
    assert [j.job_id for j in ans.jobs] == [re.match(r"JobId=(\d+)", _lines()[1]).group(1)]


def test_user_is_quoted():
    cmd = pq.poll_jobs_command("a'b; rm -rf ~")
    assert "rm -rf ~'" in cmd and cmd.count("scontrol") == 1
    r = subprocess.run(["sh", "-c", "printf '' | " + cmd.split(" | ", 1)[1]], capture_output=True,
                       text=True)
    assert r.returncode == 0
