"""The rv agent against the real test cluster: start, reuse, idle exit, stale replacement, foreign
sockets refused, the agent killed mid-command, and the direct fallback.

Every test turns the agent on for its own RV_HOME (the suite runs with RV_NO_AGENT=1) and the
``agent_env`` fixture stops every agent the test started, by pid, so none outlives a test.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rv_tui.remote.errors import ConnectionLost, HostKeyUnknown

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- helpers


def rv(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real ``rv`` CLI in a subprocess (a fresh interpreter, as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "rv_tui", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout, cwd=str(ROOT), stdin=subprocess.DEVNULL)


def agents_of(home: Path) -> list[dict[str, Any]]:
    r = rv("agent", "status", "--json")
    assert r.returncode == 0, r.stderr
    return [a for a in json.loads(r.stdout) if "pid" in a]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def wait_for(check, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def agent_pids(home: Path) -> set[int]:
    """Pids of agent processes serving sockets under ``home`` (from /proc, exact socket path)."""
    pids: set[int] = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"rv_tui.agent.server" in argv and any(a.startswith(str(home / "agent").encode()) for a in argv):
            pids.add(int(d.name))
    return {p for p in pids if alive(p)}


def set_config(home: Path, **connection: str) -> None:
    """Add/replace keys in [connection] of the test config (plain text edit of our own file)."""
    cfg = home / "config.toml"
    lines = cfg.read_text().splitlines()
    out: list[str] = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if key in connection:
            continue
        out.append(line)
        if line.strip() == "[connection]":
            out.extend(f"{k} = {v}" for k, v in connection.items())
    cfg.write_text("\n".join(out) + "\n")


@pytest.fixture
def agent_env(rv_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Agent on for this test's RV_HOME; afterwards every agent under it is stopped (by pid)."""
    monkeypatch.delenv("RV_NO_AGENT", raising=False)
    yield rv_home
    subprocess.run([sys.executable, "-m", "rv_tui", "agent", "stop"], capture_output=True,
                   env=dict(os.environ), timeout=60, cwd=str(ROOT))
    if not wait_for(lambda: not agent_pids(rv_home), timeout=10):
        for pid in agent_pids(rv_home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not agent_pids(rv_home), timeout=10), "an agent outlived its test"


# ----------------------------------------------------------------------------- tests


def test_first_command_starts_agent_two_concurrent_commands_share_it(agent_env: Path) -> None:
    assert not agent_pids(agent_env)
    first = rv("ps")
    assert first.returncode == 0, first.stderr
    (info,) = agents_of(agent_env)
    pid = info["pid"]
    assert info["connects"] == 1 and info["state"] == "connected"
    sock = Path(info["socket"])
    assert (sock.stat().st_mode & 0o777) == 0o600 and (sock.parent.stat().st_mode & 0o777) == 0o700
    # two commands at the same time, plus a third: all through the one agent and its one connection
    procs = [subprocess.Popen([sys.executable, "-m", "rv_tui", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=str(ROOT), stdin=subprocess.DEVNULL)
             for argv in (["ps"], ["status"])]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (info,) = agents_of(agent_env)
    assert info["pid"] == pid and info["connects"] == 1
    assert info["requests"] >= 4 and info["round_trips"] >= 3
    assert agent_pids(agent_env) == {pid}


def test_client_side_imports_neither_asyncssh_nor_textual(agent_env: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from rv_tui.cluster import open_cluster\n"
        "from rv_tui.config import load_config\n"
        "async def main():\n"
        "    c = await open_cluster(load_config())\n"
        "    try:\n"
        "        snap = await c.snapshot(); jobs = await c.jobs()\n"
        "        print(type(c.pool).__name__, len(snap.nodes) > 0)\n"
        "    finally:\n"
        "        await c.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncssh', 'textual')))\n"
    )
    for _ in range(2):  # cold (starts the agent), then warm
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           cwd=str(ROOT))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["AgentPool True", "[]"], r.stdout
    # and the CLI itself: `rv ps` through the agent
    r = subprocess.run([sys.executable, "-c",
                        "import sys\nfrom rv_tui.cli.main import main\nrc = main(['ps'])\n"
                        "print('MODS', sorted(m for m in sys.modules if m.split('.')[0] in ('asyncssh', 'textual')))\n"
                        "sys.exit(rc)"], capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    assert "MODS []" in r.stdout


async def test_tui_and_a_cli_command_share_one_connection(agent_env: Path) -> None:
    from rv_tui.cluster import open_cluster
    from rv_tui.config import load_config
    from rv_tui.tui.app import RvApp

    cluster = await open_cluster(load_config())
    try:
        assert type(cluster.pool).__name__ == "AgentPool"  # the TUI's cluster goes through the agent
        app = RvApp(cluster, config_path=agent_env / "config.toml", poll_interval=30, probe_windows=False)
        async with app.run_test() as pilot:
            await pilot.pause()
            cli = await asyncio.to_thread(rv, "ps")  # a second terminal, while the TUI runs
            assert cli.returncode == 0, cli.stderr
            stats = await cluster.pool.stats()
            assert stats["connects"] == 1 and stats["clients"] >= 1
            assert stats["pid"] == cluster.pool.agent_pid
    finally:
        await cluster.close()


def test_idle_agent_exits(agent_env: Path) -> None:
    set_config(agent_env, agent_idle_timeout='"6s"')
    r = rv("ps")
    assert r.returncode == 0, r.stderr
    (pid,) = agent_pids(agent_env)  # still there right after the command
    socks = list((agent_env / "agent").glob("*.sock"))
    assert len(socks) == 1
    assert wait_for(lambda: not alive(pid), timeout=40), "idle agent did not exit"
    assert not socks[0].exists()
    assert "idle for 6s: exiting" in socks[0].with_suffix(".log").read_text()


def test_config_change_replaces_the_agent(agent_env: Path) -> None:
    assert rv("ps").returncode == 0
    (old,) = agents_of(agent_env)
    set_config(agent_env, agent_idle_timeout='"7m"')  # a different config: the agent is stale
    r = rv("ps")
    assert r.returncode == 0, r.stderr
    (new,) = agents_of(agent_env)
    assert new["pid"] != old["pid"] and new["key"] != old["key"] and new["idle_timeout"] == 420
    assert wait_for(lambda: not alive(old["pid"]), timeout=15), "the stale agent kept running"


def test_older_version_is_replaced_while_its_client_finishes(agent_env: Path) -> None:
    from rv_tui.agent import protocol as proto
    from rv_tui.config import load_config

    spec = proto.agent_spec(load_config())
    path = proto.agent_dir() / proto.socket_name(spec)
    code = ("import sys\nfrom rv_tui.agent import protocol, server\n"
            "protocol.code_version = lambda: '0.0.1+old'\nsys.exit(server.main(sys.argv[1:]))")
    old = subprocess.Popen([sys.executable, "-c", code, "--socket", str(path), "--spec", json.dumps(spec)],
                           cwd=str(path.parent), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        assert wait_for(path.exists, timeout=20)
        r = rv("ps")
        assert r.returncode == 0, r.stderr
        (info,) = agents_of(agent_env)
        assert info["pid"] != old.pid and info["version"] == proto.code_version()
        assert old.wait(timeout=15) == 0  # retired, no client left: it exits
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


def _foreign_server(sock_path: Path, uid: int, gid: int, got: Path) -> int:
    """Fork a child that becomes ``uid`` and serves ``sock_path``, writing whatever it receives to
    ``got``; returns its pid once it listens."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(sock_path))
            s.listen(4)
            os.write(w, b"1")
            s.settimeout(60)
            while True:
                conn, _ = s.accept()
                conn.settimeout(3)
                data = b""
                with contextlib.suppress(OSError):
                    data = conn.recv(65536)
                with open(got, "ab") as f:
                    f.write(data or b"<connected, nothing sent>")
                conn.close()
        except BaseException:
            pass
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.close(r)
    return pid


def test_socket_of_another_user_is_never_used(agent_env: Path, slurm_cluster: Any, tmp_path: Path) -> None:
    import pwd

    from rv_tui.agent import protocol as proto
    from rv_tui.config import load_config

    other = pwd.getpwnam(slurm_cluster.other_user)
    spec = proto.agent_spec(load_config())
    path = proto.agent_dir() / proto.socket_name(spec)
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="rv-foreign-", dir="/tmp"))  # rvother can reach it
    os.chmod(shared, 0o777)
    got = shared / "got"
    got.write_bytes(b"")
    os.chmod(got, 0o666)

    # 1. a socket file owned by another uid, placed where our agent's would be
    pid = _foreign_server(shared / "a.sock", other.pw_uid, other.pw_gid, got)
    try:
        os.rename(shared / "a.sock", path)
        assert path.stat().st_uid == other.pw_uid
        r = rv("ps")
        assert r.returncode == 0, r.stderr  # it connected directly instead
        assert "not using the agent" in r.stderr and "uid" in r.stderr
        assert got.read_bytes() == b""  # never even connected
        # 2. the file says "ours" (chown) but the process behind it is another user: SO_PEERCRED
        os.chown(path, os.getuid(), os.getgid())
        r = rv("ps")
        assert r.returncode == 0, r.stderr
        assert "not using the agent" in r.stderr and f"uid {other.pw_uid}" in r.stderr
        assert wait_for(lambda: got.read_bytes() != b"", timeout=10)
        assert got.read_bytes().replace(b"<connected, nothing sent>", b"") == b""  # no hello, no request
        assert not agent_pids(agent_env)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        shutil.rmtree(shared, ignore_errors=True)


def test_agent_refuses_a_client_of_another_user(agent_env: Path, slurm_cluster: Any) -> None:
    import pwd

    assert rv("ps").returncode == 0
    (info,) = agents_of(agent_env)
    sock = Path(info["socket"])
    other = pwd.getpwnam(slurm_cluster.other_user)
    # open the permissions (restored after) so only the agent's SO_PEERCRED check stands in the way
    opened = [p for p in sock.parents if str(p).startswith("/tmp/")] + [sock]
    modes = {p: p.stat().st_mode & 0o7777 for p in opened}
    for p in opened:
        os.chmod(p, 0o777 if p == sock else modes[p] | 0o755)
    try:
        answer = _connect_as(sock, other.pw_uid, other.pw_gid)
    finally:
        for p, m in modes.items():
            os.chmod(p, m)
    # connected, then closed (or reset) without a hello: nothing of the agent reached that user
    assert answer in (b"closed", b"error [Errno 104] Connection reset by peer",
                      b"error [Errno 32] Broken pipe"), answer
    assert "refused a client with uid" in (sock.with_suffix(".log")).read_text()


def _connect_as(sock: Path, uid: int, gid: int) -> bytes:
    """Connect to ``sock`` as ``uid`` in a forked child, say hello; what came back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        answer = b"error"
        try:
            os.setgid(gid)
            os.setuid(uid)
            from rv_tui.agent import protocol as proto

            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(sock))
            s.sendall(proto.frame({"t": "hello", "pid": os.getpid()}))
            answer = s.recv(65536) or b"closed"
        except BaseException as exc:  # noqa: BLE001
            answer = f"error {exc}".encode()
        os.write(w, answer)
        os._exit(0)
    os.close(w)
    answer = b""
    while chunk := os.read(r, 65536):
        answer += chunk
    os.waitpid(pid, 0)
    return answer


def _job_ids_named(name: str, user: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-u", user, "-n", name, "-o", "%i"], capture_output=True,
                         text=True).stdout
    return out.split()


async def test_agent_killed_mid_command_never_hangs_never_submits_twice(agent_env: Path,
                                                                       slurm_cluster: Any) -> None:
    from rv_tui.cluster import open_cluster
    from rv_tui.cluster.base import JobSubmission
    from rv_tui.config import load_config

    cluster = await open_cluster(load_config())
    pool = cluster.pool
    assert type(pool).__name__ == "AgentPool"
    marker = uuid.uuid4().hex[:10]
    probe_file = f"{slurm_cluster.scratch}/agent-kill-{marker}"
    try:
        # a non-idempotent command in flight when the agent dies: a clear error, not retried
        task = asyncio.create_task(pool.run(f"sleep 1; echo once >> {probe_file}; sleep 3",
                                            idempotent=False))
        await asyncio.sleep(0.5)
        os.kill(pool.agent_pid, signal.SIGKILL)
        with pytest.raises(ConnectionLost) as ei:
            await asyncio.wait_for(task, 30)
        assert "may or may not have run" in ei.value.message and "rv ps" in (ei.value.hint or "")
        # an idempotent one is retried on a direct connection and just works
        r = await asyncio.wait_for(pool.run(f"echo again-{marker}"), 60)
        assert r.stdout == f"again-{marker}\n" and not pool.via_agent
        await asyncio.sleep(4)  # let the first command's remote process finish if it survived
        lines = (await pool.run(f"cat {probe_file} 2>/dev/null; rm -f {probe_file}")).stdout.split()
        assert lines in ([], ["once"])  # ran at most once
    finally:
        await cluster.close()

    # a submission: the agent dies while sbatch runs -> fails saying it may have submitted; one job at most
    cluster = await open_cluster(load_config())
    pool = cluster.pool
    assert type(pool).__name__ == "AgentPool" and pool.via_agent
    name = f"agentkill-{marker}"
    script = f"#!/bin/bash\n#SBATCH -J {name}\n#SBATCH -p standard\n#SBATCH -t 5\nsleep 60\n"
    # slow the batch down on the login node so the kill lands while it runs
    real_run_many = pool.run_many

    async def slow_run_many(cmds, **kw):
        return await real_run_many(["sleep 1"] + list(cmds), **kw)

    pool.run_many = slow_run_many  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(cluster.submit([JobSubmission(
            script=script, name=name, partition="standard", nodes=1, gpus_per_node=0, gpu_type="cpu",
            walltime_s=300)]))
        await asyncio.sleep(0.4)
        os.kill(pool.agent_pid, signal.SIGKILL)
        try:
            res = await asyncio.wait_for(task, 60)
        except ConnectionLost as exc:
            assert "submission may have happened" in exc.message
        else:  # the batch finished before the kill: then it submitted exactly once
            assert len(res) == 1
        await asyncio.sleep(2)
        assert len(_job_ids_named(name, slurm_cluster.user)) <= 1
    finally:
        ids = _job_ids_named(name, slurm_cluster.user)
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)
        # sbatch killed before its `rm`: remove our script, never anyone else's
        tmp = Path(slurm_cluster.scratch) / ".rv" / "tmp"
        for f in tmp.glob("rv-*.sh"):
            with contextlib.suppress(OSError):
                if name in f.read_text():
                    f.unlink()
        await cluster.close()


def test_direct_fallback_when_the_agent_cannot_start(agent_env: Path) -> None:
    (agent_env / "agent").write_text("not a directory")  # the agent has nowhere to live
    r = rv("ps")
    assert r.returncode == 0, r.stderr
    assert not agent_pids(agent_env)
    (agent_env / "agent").unlink()
    # and with connection.agent = false nothing is started either
    set_config(agent_env, agent="false")
    assert rv("ps").returncode == 0
    assert not agent_pids(agent_env) and not (agent_env / "agent").exists()


def test_host_key_errors_reach_the_caller_through_the_agent(agent_env: Path, tmp_path: Path) -> None:
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    set_config(agent_env, known_hosts=json.dumps(str(kh)))
    via_agent = rv("ps")
    env = dict(os.environ, RV_NO_AGENT="1")
    direct = rv("ps", env=env)
    assert via_agent.returncode == direct.returncode == 2
    assert "host key for" in via_agent.stderr and "ssh-keyscan" in via_agent.stderr
    assert via_agent.stderr == direct.stderr  # the very same message and hint


async def test_host_key_error_type_survives_the_socket(agent_env: Path, tmp_path: Path) -> None:
    from rv_tui.cluster import open_cluster
    from rv_tui.config import load_config

    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    set_config(agent_env, known_hosts=json.dumps(str(kh)))
    with pytest.raises(HostKeyUnknown) as ei:
        await open_cluster(load_config())
    assert ei.value.known_hosts == str(kh) and ei.value.hint and "ssh-keyscan" in ei.value.hint
    assert agent_pids(agent_env)  # it was the agent that tried (and it stays for the next command)


def _kill_sshd_of(pid: int, port: int) -> list[int]:
    """Kill the sshd process serving the SSH connection that process ``pid`` holds to ``port``."""
    import re

    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    lports = [int(m.group(1)) for line in out.splitlines() if f"pid={pid}," in line
              for m in [re.search(r":(\d+)\s+\S+:\d+\s", line)] if m]
    killed: list[int] = []
    for lport in lports:
        peer = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{lport} )"],
                              capture_output=True, text=True, check=True).stdout
        for spid in {int(p) for p in re.findall(r"pid=(\d+)", peer)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spid, signal.SIGKILL)
                killed.append(spid)
    return killed


async def test_reconnect_events_reach_the_client_through_the_agent(agent_env: Path, slurm_cluster: Any) -> None:
    from rv_tui.cluster import open_cluster
    from rv_tui.config import load_config

    cluster = await open_cluster(load_config())
    events: list[str] = []
    try:
        remove = cluster.add_connection_listener(lambda ev: events.append(ev.state))
        assert (await cluster.exec("echo up")).stdout == "up\n"
        assert _kill_sshd_of(cluster.pool.agent_pid, slurm_cluster.port), "no sshd found for the agent"
        deadline = time.monotonic() + 60
        while "connected" not in events[events.index("reconnecting") + 1:] if "reconnecting" in events else True:
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.05)
        assert (await cluster.exec("echo back")).stdout == "back\n"
        assert cluster.pool.via_agent  # the agent reconnected; the command never noticed
        stats = await cluster.pool.stats()
        assert stats["connects"] == 2
        remove()
    finally:
        await cluster.close()


@pytest.mark.cluster
def test_socket_path_longer_than_sockaddr_un_still_works(tmp_path: Path) -> None:
    """A deep RV_HOME (CI runners' temp dirs) makes the socket path longer than AF_UNIX holds."""
    from rv_tui.agent import protocol as proto

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "agent.sock"
    assert len(str(path)) > 108
    with pytest.raises(OSError):
        socket.socket(socket.AF_UNIX).bind(str(path))  # what a plain bind would do
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(proto.sun_path(path))
    srv.listen(1)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(proto.sun_path(path))
    conn, _ = srv.accept()
    cli.sendall(b"x")
    assert conn.recv(1) == b"x" and path.exists()
    for s in (cli, conn, srv):
        s.close()
