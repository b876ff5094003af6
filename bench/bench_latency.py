"""Latency of everyday rv commands as a VPN user sees them, against a ControlMaster shell-out CLI.

A delaying TCP proxy (20 ms each way, 40 ms round trip) sits in front of the test cluster's sshd.
For ``ps``, ``status``, ``up --dry-run -g 4``, ``run`` (submit only) and ``logs ID --tail 100``
this times the real ``rv`` CLI (a fresh interpreter per command, as a user runs it):

* warm   - the rv agent is running (its connection is up);
* cold   - no agent: the command starts it and makes the SSH handshake;
* direct - RV_NO_AGENT=1: no agent at all (the pre-agent behaviour);

against a baseline measured in the same run: system ``ssh`` with ControlMaster/ControlPersist
running the *same remote commands* rv ran for that invocation (captured from rv's own command
log), one exec at a time, as a shell-out CLI such as the original rv does. Warm baseline: the
master is up; cold baseline: the master is started by the first exec.

It prints medians and ratios, and the round trips (pool channel sessions) of a warm ``rv run``.
Run: ``.venv/bin/python bench/bench_latency.py [--repeat 5] [--delay-ms 20]`` (needs the local
test cluster, tests/cluster/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STATE = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster"))


# ----------------------------------------------------------------------------- delaying proxy


class DelayProxy:
    """127.0.0.1:<port> -> upstream, every chunk delivered ``delay`` seconds after it arrived
    (in order, both directions; bandwidth is not limited, only latency added)."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, data = await q.get()
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                q.put_nowait((time.monotonic() + self.delay, data))
                if not data:
                    break
            await task
        except (ConnectionError, OSError):
            task.cancel()
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer), return_exceptions=True)


# ----------------------------------------------------------------------------- setup


def cluster_info() -> dict[str, Any]:
    return json.loads((STATE / "cluster.json").read_text())


def make_home(info: dict[str, Any], port: int, work: Path) -> Path:
    """An RV_HOME whose config reaches the cluster through the proxy; known_hosts re-keyed."""
    home = work / "rv-home"
    home.mkdir(parents=True, exist_ok=True)
    kh = work / "known_hosts"
    lines = []
    for line in Path(info["known_hosts"]).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            lines.append(f"[127.0.0.1]:{port} {parts[-2]} {parts[-1]}")
    kh.write_text("\n".join(lines) + "\n")
    cfg = home / "config.toml"
    cfg.write_text(f"""[connection]
host = "bench-cluster"
hostname = "127.0.0.1"
user = "{info['user']}"
port = {port}
identity_file = "{info['identity_file']}"
known_hosts = "{kh}"

[defaults]
account = "{info['user']}"
gpu_type = "any"
time = "2:59:00"

[paths]
scratch = "{info['scratch']}"
home = "/home/{info['user']}"

[scratch_keepalive]
enabled = false
""")
    os.chmod(cfg, 0o600)
    return home


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, RV_HOME=str(home))
    env.pop("RV_NO_AGENT", None)
    env.update(extra)
    return env


def rv(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "rv_tui", *args], capture_output=True, text=True, env=env,
                       cwd=str(cwd), stdin=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - t0, r


def capture_commands(args: list[str], home: Path, cwd: Path) -> tuple[list[tuple[str, str]], str]:
    """The remote commands rv runs for ``args`` (kind, command), from its own command log, by
    running it once in a child interpreter with a direct pool."""
    code = f"""
import json, os, sys
os.chdir({str(cwd)!r})
from rv_tui.remote import pool as P
made = []
orig = P.RemotePool.__init__
def init(self, *a, **k):
    orig(self, *a, **k); made.append(self)
P.RemotePool.__init__ = init
from rv_tui.cli.main import main
import contextlib, io
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main({args!r})
recs = [(r.kind, r.command) for p in made for r in p.command_log.records()]
print(json.dumps({{"rc": rc, "recs": recs, "out": buf.getvalue()}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env_for(home, RV_NO_AGENT="1"), cwd=str(ROOT), timeout=300)
    data = json.loads(r.stdout.strip().splitlines()[-1])
    return [(k, c) for k, c in data["recs"]], data["out"]


class ControlMaster:
    """System ssh with ControlMaster/ControlPersist, as a shell-out CLI uses it."""

    def __init__(self, info: dict[str, Any], port: int, kh: Path, work: Path) -> None:
        self.ctl = str(work / "cm-%C")
        self.base = ["ssh", "-o", "ControlMaster=auto", "-o", f"ControlPath={self.ctl}",
                     "-o", "ControlPersist=300", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                     "-o", f"UserKnownHostsFile={kh}", "-i", info["identity_file"], "-p", str(port),
                     f"{info['user']}@127.0.0.1"]

    def exec(self, cmd: str, stdin: bytes | None = None) -> None:
        subprocess.run(self.base + [cmd], input=stdin or b"", capture_output=True, timeout=120)

    def stop(self) -> None:
        subprocess.run(self.base[:-1] + ["-O", "exit", self.base[-1]], capture_output=True, timeout=30)

    def replay(self, recs: list[tuple[str, str]]) -> float:
        """Run rv's remote commands one exec at a time (SFTP reads/writes as cat)."""
        t0 = time.perf_counter()
        for kind, cmd in recs:
            if kind in ("sftp", "write"):
                words = cmd.split()
                path = words[2] if len(words) > 2 and words[0] == "sftp" else words[1]
                if "read" in cmd or "get" in cmd:
                    self.exec(f"cat -- {shlex.quote(path)} >/dev/null 2>&1; true")
                else:
                    self.exec("cat > /dev/null", stdin=b"x" * 2048)
            elif kind == "kill":
                continue
            else:
                self.exec(cmd)
        return time.perf_counter() - t0


def scancel_json(out: str) -> None:
    try:
        ids = json.loads(out).get("job_ids") or []
    except (ValueError, AttributeError):
        return
    if ids:
        subprocess.run(["scancel", *map(str, ids)], capture_output=True)


def make_log_job(info: dict[str, Any]) -> str:
    """A finished job with a 300-line log, submitted as the test user."""
    out = f"{info['scratch']}/bench-latency-%j.out"
    r = subprocess.run(["su", "-", info["user"], "-c",
                        "sbatch --parsable -p standard -t 5 -o " + shlex.quote(out) +
                        " --wrap 'for i in $(seq 1 300); do echo line $i; done'"],
                       capture_output=True, text=True, timeout=60)
    job = r.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
        if not q.strip():
            break
        time.sleep(0.3)
    return job


# ----------------------------------------------------------------------------- main


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    opts = ap.parse_args()
    info = cluster_info()
    proxy = DelayProxy((info["host"], int(info["port"])), opts.delay_ms / 1000).start()
    work = Path(tempfile.mkdtemp(prefix="rv-bench-lat-"))
    os.chmod(work, 0o700)
    cwd = work / "not-a-project"
    cwd.mkdir()
    home = make_home(info, proxy.port, work)
    cm = ControlMaster(info, proxy.port, work / "known_hosts", work)
    log_job = make_log_job(info)
    commands = {
        "ps": ["ps"],
        "status": ["status"],
        "up --dry-run -g 4": ["up", "--dry-run", "-g", "4", "--time", "2h"],
        "run (submit only)": ["run", "-g", "1", "--time", "10m", "--json", "--", "true"],
        "logs ID --tail 100": ["logs", log_job, "--tail", "100"],
    }
    warm_env, direct_env = env_for(home), env_for(home, RV_NO_AGENT="1")
    rows = []
    rt_run: list[int] = []
    try:
        for label, args in commands.items():
            for _attempt in range(3):  # the shared test cluster is sometimes restarted by other tests
                recs, out = capture_commands(args, home, cwd)
                if recs:
                    break
                time.sleep(5)
            scancel_json(out) if args[0] == "run" else None
            warm, cold, direct, base_w, base_c = [], [], [], [], []
            rv(["ps"], warm_env, cwd)  # agent up
            cm.exec("true")  # master up
            for _ in range(opts.repeat):
                before = _agent_stats(warm_env, cwd)
                t, r = rv(args, warm_env, cwd)
                after = _agent_stats(warm_env, cwd)
                if r.returncode != 0:
                    print(f"  {label}: rv exited {r.returncode}: {r.stderr.strip()[:300]}", file=sys.stderr)
                if args[0] == "run":
                    scancel_json(r.stdout)
                    if before and after:
                        rt_run.append(after["round_trips"] - before["round_trips"])
                warm.append(t)
                base_w.append(cm.replay(recs))
                rv(["agent", "stop"], warm_env, cwd)
                t, r = rv(args, warm_env, cwd)
                cold.append(t)
                if args[0] == "run":
                    scancel_json(r.stdout)
                t, r = rv(args, direct_env, cwd)
                direct.append(t)
                if args[0] == "run":
                    scancel_json(r.stdout)
                cm.stop()
                base_c.append(cm.replay(recs))
            rows.append((label, len(recs), median(warm), median(cold), median(direct), median(base_w),
                         median(base_c)))
            print(f"  measured {label}", file=sys.stderr)
    finally:
        rv(["agent", "stop"], warm_env, cwd)
        cm.stop()
    print(f"\nrv latency through a {opts.delay_ms:g} ms-each-way proxy ({2 * opts.delay_ms:g} ms RTT), "
          f"medians of {opts.repeat}; baseline = ssh ControlMaster running rv's remote commands one exec at a time\n")
    print("| command | remote cmds | rv warm (agent) | ControlMaster warm | ratio | rv cold (no agent yet) "
          "| ControlMaster cold | ratio | rv direct (no agent) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, n, w, c, d, bw, bc in rows:
        print(f"| `rv {label}` | {n} | {w:.2f} s | {bw:.2f} s | {w / bw:.2f}x | {c:.2f} s | {bc:.2f} s "
              f"| {c / bc:.2f}x | {d:.2f} s |")
    if rt_run:
        print(f"\nwarm `rv run` round trips (pool channel sessions): median {median(rt_run):g} "
              f"(runs: {rt_run})")
    return 0


def _agent_stats(env: dict[str, str], cwd: Path) -> dict[str, Any] | None:
    _, r = rv(["agent", "status", "--json"], env, cwd)
    try:
        agents = [a for a in json.loads(r.stdout) if "pid" in a]
    except ValueError:
        return None
    return agents[0] if agents else None


if __name__ == "__main__":
    sys.exit(main())
