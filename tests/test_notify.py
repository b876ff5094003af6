"""Notifications: HMAC signing/verification, replay protection, and the on-node sender.

The sender is the shell code the job script embeds; it is run here under bash against the local
receiver (tests/notify_receiver.py), both via python3 and via the python-less sha256sum+curl path,
with hostile tokens and e-mails, and with wrappers that record every argv to prove the token never
reaches a command line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notify_receiver import NotifyReceiver  # noqa: E402

from rv_tui.jobs.notify import NotifySettings, notify_shell, sign, verify  # noqa: E402

TOKENS = ["s3cr3t-token-6666", "it's \"$(id)\" `x`\\", "ü-ñ-6" * 3]


def _signed(token: str, body: dict, ts: int | None = None) -> tuple[dict[str, str], bytes]:
    ts = int(time.time()) if ts is None else ts
    body = dict(body, timestamp=ts)
    raw = json.dumps(body).encode()
    return {"X-Rv-Timestamp": str(ts), "X-Rv-Signature": sign(token, ts, raw)}, raw


def test_sign_and_verify() -> None:
    h, raw = _signed("k", {"event": "COMPLETED"})
    assert verify("k", h, raw)
    assert not verify("other", h, raw)
    assert not verify("k", h, raw.replace(b"COMPLETED", b"FAILED"))
    h2, raw2 = _signed("k", {"event": "COMPLETED"}, ts=int(time.time()) - 3600)
    assert not verify("k", h2, raw2)  # stale: replay window closed
    bad = dict(h, **{"X-Rv-Timestamp": str(int(h["X-Rv-Timestamp"]) + 1)})
    assert not verify("k", bad, raw)  # timestamp is bound into the signature and the body
    assert not verify("k", {}, raw)


def test_settings_repr_hides_token() -> None:
    assert "hunter2" not in repr(NotifySettings(url="u", token="hunter2", user="x"))


def test_receiver_rejects_replay() -> None:
    import urllib.error
    import urllib.request
    with NotifyReceiver("k") as r:
        h, raw = _signed("k", {"event": "FAILED", "nonce": "n1"})
        for expect in (204, 403):
            req = urllib.request.Request(r.url, data=raw, headers=h, method="POST")
            try:
                status = urllib.request.urlopen(req, timeout=5).status
            except urllib.error.HTTPError as e:
                status = e.code
            assert status == expect
        assert len(r.valid_events()) == 1


@pytest.fixture
def argv_spy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """PATH wrappers for python3/curl/od/sha256sum that log their argv, then run the real tool."""
    bindir = tmp_path / "spy"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    for tool in ("python3", "curl", "od", "sha256sum", "hostname", "date"):
        real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        p = bindir / tool
        p.write_text(f'#!/bin/bash\nprintf "%s\\n" "{tool} $*" >> {log}\nexec {real} "$@"\n')
        p.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", SLURM_JOB_ID="4242")
    return log, env


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize("shell_only", [False, True])
def test_sender_posts_signed_events(token: str, shell_only: bool, argv_spy: tuple[Path, dict[str, str]]) -> None:
    log, env = argv_spy
    email = 'a"b\'c@virginia.edu'
    with NotifyReceiver(token) as r:
        s = NotifySettings(url=r.url, token=token, user="abc1de", email=email)
        script = notify_shell(s, job_name="rv-train", group_id="g1") + (
            f"RV_NOTIFY_SHELL={'1' if shell_only else ''}\n_rv_t0=$(date +%s)\n"
            "for ev in COMPLETED FAILED TIMEOUT RESUBMITTED; do _rv_notify $ev 7 \"why: $ev\"; done\n")
        p = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert r.wait_for(lambda b: len(b) >= 4, timeout=10), [x.status for x in r.received]
        bodies = r.valid_events()
        assert [b["event"] for b in bodies] == ["COMPLETED", "FAILED", "TIMEOUT", "RESUBMITTED"]
        assert all(b["job_id"] == "4242" and b["job_name"] == "rv-train" and b["user"] == "abc1de"
                   and b["email"] == email and b["exit_code"] == 7 and b["group_id"] == "g1" for b in bodies)
        assert bodies[1]["reason"] == "why: FAILED"
        assert len({b["nonce"] for b in bodies}) == 4
    argv = log.read_text()
    assert ("curl" in argv) == shell_only  # the intended path was taken
    assert token not in argv and token not in p.stderr and token not in p.stdout
    assert r.url not in p.stderr  # webhook URLs may carry secrets too


def test_unreachable_webhook_does_not_fail_or_hang(argv_spy: tuple[Path, dict[str, str]]) -> None:
    _, env = argv_spy
    s = NotifySettings(url="http://127.0.0.1:9/none", token="k", user="u")
    script = notify_shell(s, job_name="x", group_id="g") + "_rv_notify FAILED 1 x; echo after=$?\n"
    p = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert "after=0" in p.stdout and "not delivered" in p.stderr
