"""Faults on the local test cluster for the fault-suite tests: a slurmctld restart (an outage of a
chosen length, with jobs kept) and a look at the mail slurmctld would have sent.

Why here: every fault test must inject the fault the same way the cluster scripts run the
daemons (tests/cluster/cluster.py), and two sessions must never restart slurmctld at once
(``STATE/faults.lock`` serialises them).  The controller comes back *without* ``-c``, so it
recovers its saved state: queued and running jobs survive, as on a real cluster.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

STATE = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster")).resolve()
CTLD_HOST = "rv-slurmctld"
CONF = STATE / "etc" / "slurm.conf"
CTLD_PID = STATE / "run" / "slurmctld.pid"
MAIL_LOG = STATE / "mail" / "mail.log"


def _env() -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(CONF)}


def _pid() -> int | None:
    try:
        pid = int(CTLD_PID.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def controller_up() -> bool:
    r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env=_env(), timeout=60)
    return "UP" in r.stdout


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "faults.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def stop_slurmctld(timeout: float = 30.0) -> None:
    """SIGTERM slurmctld (it saves its state) and wait until it is gone."""
    pid = _pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def start_slurmctld(timeout: float = 60.0) -> None:
    """Start slurmctld as cluster.py does, but keeping its saved state (no ``-c``)."""
    if _pid() is None:
        CTLD_PID.unlink(missing_ok=True)
        subprocess.run(["unshare", "--uts", "sh", "-c", f"hostname {CTLD_HOST} && exec slurmctld"],
                       check=True, env=_env(), capture_output=True, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if controller_up():
            return
        time.sleep(0.5)
    raise RuntimeError("slurmctld did not come back")


def restart_slurmctld(down_s: float = 12.0) -> float:
    """An outage of about ``down_s`` seconds; returns how long the controller was really down.
    Serialised across sessions; the controller is always started again."""
    with _lock():
        t0 = time.monotonic()
        stop_slurmctld()
        try:
            time.sleep(down_s)  # the fault itself, not a wait for a result
        finally:
            start_slurmctld()
        return time.monotonic() - t0


@dataclass
class Mail:
    """One call of the cluster's MailProg (tests/cluster/mailprog.sh)."""

    at: int
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def subject(self) -> str:
        return self.args[self.args.index("-s") + 1] if "-s" in self.args[:-1] else ""

    @property
    def recipient(self) -> str:
        return self.args[-1] if self.args else ""


def read_mail(path: Path = MAIL_LOG) -> list[Mail]:
    """Every recorded mail, oldest first."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    out: list[Mail] = []
    for chunk in text.split("@@mail@@ ")[1:]:
        head, _, rest = chunk.partition("\n")
        meta, _, body = rest.partition("-- body\n")
        mail = Mail(at=int(head.strip() or 0), body=body.rsplit("@@end@@", 1)[0].strip())
        for line in meta.splitlines():
            if line.startswith("arg="):
                mail.args.append(line[4:])
            elif "=" in line:
                k, v = line.split("=", 1)
                mail.env[k] = v
        out.append(mail)
    return out
