"""Notifications that arrive: Slurm's own mail for ``notifications.email``, the HMAC webhook for
``notifications.url``, and the TUI telling you when one of your jobs ended.

* the script: every sibling names the address (``--mail-user``) but none asks for mail in its
  ``#SBATCH`` lines; only the job that wins the claim switches ``MailType`` on for itself, so a
  race sends one mail, not one CANCELLED mail per loser;
* the webhook's curl fallback never has the URL on its argv (URLs carry secrets: ``?token=``);
* on the real cluster (its MailProg records what slurmctld sends, tests/cluster/mailprog.sh):
  a finished race sends exactly one END mail, for the winner, to the configured address, and the
  winner's signed webhook POST arrives and verifies;
* the TUI posts a notification when a job it saw running leaves the queue.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rv_tui.allocator.model import Strategy, StrategyKind
from rv_tui.jobs.notify import MAIL_TYPES, NotifySettings, ended_jobs, notify_shell
from rv_tui.jobs.templates import JobContext, build_script

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))
from notify_receiver import NotifyReceiver  # noqa: E402

import faults  # noqa: E402


def _strategy() -> Strategy:
    return Strategy(id="v100-1x1", label="V100 1x1", gpu_type="v100", partition="gpu-v100", nodes=1,
                    gpus_per_node=1, kind=StrategyKind.DIRECT, walltime_s=600, time_min_s=None,
                    est_wait_s=0, est_su=0, mem="16G", cpus_per_task=1, constraint=None,
                    total_time_s=600)


def _ctx(**kw: object) -> JobContext:
    base = dict(name="rv-mail", command="true", scratch="/scratch/abc1de", group_id="g1")
    return JobContext(**{**base, **kw})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the script

def test_only_the_winner_asks_for_mail() -> None:
    script = build_script(_ctx(mail_user="abc1de+rv@virginia.edu"), _strategy())
    lines = script.splitlines()
    assert "#SBATCH --mail-user=abc1de+rv@virginia.edu" in lines
    assert not [ln for ln in lines if ln.startswith("#SBATCH --mail-type")]  # no sibling mails by itself
    switch = next(i for i, ln in enumerate(lines) if f"MailType={MAIL_TYPES}" in ln)
    won = next(i for i, ln in enumerate(lines) if "already won by job" in ln)
    assert switch > won  # after the claim: a loser has exited before it gets there
    assert "--mail" not in build_script(_ctx(), _strategy())  # no email configured: no mail at all


@pytest.mark.parametrize("bad", ["a b@x.org", "a\"@x.org", "$(id)@x.org", "a@x.org\n#SBATCH -p x"])
def test_hostile_mail_address_never_reaches_an_sbatch_line(bad: str) -> None:
    from rv_tui.errors import RvError

    with pytest.raises(RvError):
        build_script(_ctx(mail_user=bad), _strategy())


def test_mail_user_follows_the_config() -> None:
    from rv_tui.config import NotificationsConfig
    from rv_tui.jobs.notify import mail_user

    class C:
        notifications = NotificationsConfig(enabled=True, email="a@b.org")

    assert mail_user(C()) == "a@b.org"
    C.notifications = NotificationsConfig(enabled=False, email="a@b.org")
    assert mail_user(C()) is None
    assert mail_user(None) is None


@pytest.fixture
def curl_spy(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A ``curl`` on PATH that records its argv and stdin, then runs the real curl with both."""
    bindir = tmp_path / "spy"
    bindir.mkdir()
    argv_log, stdin_log = tmp_path / "argv.log", tmp_path / "stdin.log"
    real = subprocess.run(["bash", "-c", "command -v curl"], capture_output=True, text=True).stdout.strip()
    spy = bindir / "curl"
    spy.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {argv_log}\n'
                   f'tee -a {stdin_log} | exec {real} "$@"\n')
    spy.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", SLURM_JOB_ID="4242", RV_NOTIFY_SHELL="1")
    return argv_log, stdin_log, env


@pytest.mark.parametrize("secret", ["s3cret", 'we"ird', "back\\slash", "a&c=$(id)`x`"])
def test_curl_reads_the_webhook_url_from_stdin_not_argv(curl_spy, secret: str) -> None:
    """Before the fix the URL (and a token in its query) was curl's last argument."""
    import urllib.parse

    argv_log, stdin_log, env = curl_spy
    with NotifyReceiver("tok") as r:
        safe = "&$()= \"\\"  # keep the awkward characters raw in the URL
        url = r.url + "?k=" + urllib.parse.quote(secret, safe=safe)
        s = NotifySettings(url=url, token="tok", user="abc1de")
        script = notify_shell(s, job_name="rv-x", group_id="g1") + "_rv_t0=$(date +%s)\n_rv_notify COMPLETED 0\n"
        p = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert r.wait_for(lambda b: len(b) >= 1, timeout=10), p.stderr
        assert [b["event"] for b in r.valid_events()] == ["COMPLETED"]
    argv = argv_log.read_text()
    assert argv.strip(), "curl was not used"
    assert r.url not in argv and "k=" not in argv
    assert url not in p.stderr and url not in p.stdout
    assert stdin_log.read_text().startswith("url = ")


# ----------------------------------------------------------------------------- the TUI

def test_ended_jobs_are_the_started_ones_that_left() -> None:
    from rv_tui.cluster.base import JobInfo

    def j(jid: str, state: str) -> JobInfo:
        return JobInfo(jid, "n", "u", state, "p")

    before = [j("1", "RUNNING"), j("2", "PENDING"), j("3", "RUNNING"), j("4", "RUNNING")]
    now = [j("3", "RUNNING"), j("4", "FAILED")]
    assert [(e.job_id, e.state) for e in ended_jobs(before, now)] == [("1", "RUNNING"), ("4", "FAILED")]
    assert ended_jobs([], now) == [] and ended_jobs(now, now) == []


async def test_tui_notifies_when_a_running_job_leaves_the_queue(tmp_path, monkeypatch) -> None:
    from rv_tui.cluster.base import JobInfo
    from rv_tui.cluster.demo import DemoCluster
    from rv_tui.tui import messages as m
    from rv_tui.tui.app import RvApp

    home = tmp_path / "rv-home"
    home.mkdir()
    (home / "config.toml").write_text('[connection]\nhost = "rivanna"\nuser = "abc1de"\n')
    monkeypatch.setenv("RV_HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    app = RvApp(DemoCluster(seed=7, speed=0), config_path=home / "config.toml", poll_interval=3600.0, cwd=work)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 60
        while app.state.snapshot is None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        snap = app.state.snapshot
        assert snap is not None
        running = JobInfo("777", "train-llm", "abc1de", "RUNNING", "gpu-a100-80", nodes=("udc-an36-1",))
        app.post_message(m.ClusterPolled(snap, [running], 0.0))
        await pilot.pause(0.2)
        app.post_message(m.ClusterPolled(snap, [], 0.0))
        deadline = time.monotonic() + 10
        texts: list[str] = []
        while time.monotonic() < deadline:
            texts = [n.message for n in app._notifications]
            if any("777" in t for t in texts):
                break
            await pilot.pause(0.05)
        assert any("job 777 train-llm ended" in t for t in texts), texts


# ----------------------------------------------------------------------------- real cluster

def _enable_notifications(rv_home: Path, email: str, url: str | None, token: str) -> None:
    cfg = rv_home / "config.toml"
    text = cfg.read_text().replace("[notifications]\nenabled = false\n",
                                   f'[notifications]\nenabled = true\nemail = "{email}"\ntoken = "{token}"\n'
                                   + (f'url = "{url}"\n' if url else ""))
    assert "enabled = true" in text
    cfg.write_text(text)


@pytest.mark.cluster
def test_a_finished_race_sends_one_mail_and_one_signed_post(capsys, rv_home, own_jobs, tmp_path,
                                                            monkeypatch, slurm_cluster) -> None:
    """Three strategies race; only the winner mails (END, to our address) and posts."""
    from rv_tui.cli.main import main as rv_main

    if not any(ln.startswith("MailProg=") for ln in Path(slurm_cluster.slurm_conf).read_text().splitlines()):
        pytest.fail("the test cluster's slurm.conf has no MailProg (restart it: tests/cluster/start.sh)")
    if not faults.controller_up():
        pytest.fail("slurmctld is down")
    work = tmp_path / "not-a-project"
    work.mkdir()
    monkeypatch.chdir(work)
    email = f"rv-{uuid.uuid4().hex[:8]}@example.org"
    token = uuid.uuid4().hex
    with NotifyReceiver(token) as receiver:
        _enable_notifications(rv_home, email, receiver.url, token)
        code = rv_main(["run", "-f", "-g", "1", "--time", "10m", "--wait-timeout", "5m",
                        "--max-strategies", "3", "--json", "--", "echo hello; exit 0"])
        out, err = capsys.readouterr()
        assert code == 0, (out, err)
        res = json.loads(out)
        winner = res["winner"]
        assert receiver.wait_for(lambda b: any(x.get("job_id") == winner for x in b), timeout=60)
        posts = receiver.valid_events()
    assert [(b["event"], b["job_id"]) for b in posts] == [("COMPLETED", winner)], posts
    ids = [j["job_id"] for j in res["jobs"] if j["job_id"]]
    assert len(ids) >= 2, res  # a real race, so losers could have mailed

    def ours() -> list[faults.Mail]:
        return [m for m in faults.read_mail() if m.env.get("SLURM_JOB_ID") in ids]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ours():
        time.sleep(0.5)
    mails = ours()
    assert [(m.env["SLURM_JOB_ID"], m.recipient) for m in mails] == [(winner, email)], [
        (m.env, m.args) for m in mails]
    assert mails[0].env.get("SLURM_JOB_MAIL_TYPE") == "Ended"
    assert re.search(rf"Job_id={winner}\b", mails[0].subject), mails[0].subject
