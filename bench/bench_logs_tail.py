#!/usr/bin/env python3
"""``rv logs --tail 100`` of a 1 GB remote log: bytes over the network and peak RSS of rv.

Runs on the local Slurm test cluster (tests/cluster/).  A finished job's 1 GB ``.out`` is made on
the login node (``yes | head -c``, then 100 numbered lines) in a private scratch; rv finds it by
listing the logs directory.  Every SSH byte goes through a counting TCP proxy in this process, and
each measured command runs as a child whose peak RSS comes from ``wait4``.  Three runs, same file,
same proxy:

* ``rv``: this tree (``tail -n`` on the login node via ``Cluster.tail_file``);
* ``old``: the revision before the fix (whole file over SFTP into memory), when it is still
  reachable in git and the machine has the memory for it (``--no-old`` skips it);
* ``ssh tail``: plain OpenSSH ``ssh host tail -n 100 FILE`` (the floor for one round trip).

Targets (issue 12): rv transfers <= 1 MB and peaks <= 100 MB RSS.  The 1 GB file is deleted after.

Usage: python3 bench/bench_logs_tail.py [--size-mb 1024] [--no-old] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STATE = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster"))
#: The last commit whose ``read_sources`` read whole files for ``--tail`` (parent of the fix).
OLD_REV = "a6c4536^"
TARGET_BYTES = 1 << 20
TARGET_RSS = 100 << 20


class CountingProxy:
    """127.0.0.1:<port> -> the login node's sshd, counting bytes each way (in its own thread)."""

    def __init__(self, host: str, port: int) -> None:
        self.dest = (host, port)
        self.down = 0  # server -> client
        self.up = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool) -> None:
            try:
                while data := await reader.read(1 << 16):
                    if down:
                        self.down += len(data)
                    else:
                        self.up += len(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            try:
                sr, sw = await asyncio.open_connection(*self.dest)
            except OSError:
                cw.close()  # the login node is down: the measured command fails and says so
                return
            await asyncio.gather(pipe(cr, sw, False), pipe(sr, cw, True))

        async def start() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await server.serve_forever()

        self._loop.run_until_complete(start())

    def snapshot(self) -> tuple[int, int]:
        return self.down, self.up


@dataclass
class Run:
    name: str
    exit_status: int
    seconds: float
    bytes_down: int
    bytes_up: int
    peak_rss: int
    last_line_ok: bool
    note: str = ""


def measure(name: str, argv: list[str], env: dict[str, str], proxy: CountingProxy,
            expect_last: str, cwd: str) -> Run:
    d0, u0 = proxy.snapshot()
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - t0
        time.sleep(0.2)  # let the proxy count the connection's last bytes
        d1, u1 = proxy.snapshot()
        out.seek(0)
        err.seek(0)
        text = out.read().decode("utf-8", "replace")
        errs = err.read().decode("utf-8", "replace").strip().splitlines()
    lines = text.splitlines()
    ok = bool(lines) and lines[-1] == expect_last
    note = "" if ok and proc.returncode == 0 else (errs[-1][:160] if errs else f"printed {len(lines)} lines")
    return Run(name, proc.returncode, round(seconds, 2), d1 - d0, u1 - u0, usage.ru_maxrss * 1024, ok, note)


def write_config(home: Path, info: dict, port: int, scratch: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    text = (f'[connection]\nhost = "127.0.0.1"\nhostname = "127.0.0.1"\nuser = "{info["user"]}"\n'
            f'port = {port}\nidentity_file = "{info["identity_file"]}"\nknown_hosts = "{home / "known_hosts"}"\n'
            # no background agent: the measured process must be the one holding the data
            f'agent = false\n'
            f'\n[paths]\nscratch = "{scratch}"\n\n[scratch_keepalive]\nenabled = false\n')
    fd = os.open(home / "config.toml", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    # the proxy listens on another port: the host key is the same, under [127.0.0.1]:<port>
    keys = Path(info["known_hosts"]).read_text().splitlines()
    (home / "known_hosts").write_text("".join(
        f"[127.0.0.1]:{port} {' '.join(k.split()[1:])}\n" for k in keys if k.strip()))


def ssh_argv(info: dict, port: int, home: Path, command: str) -> list[str]:
    return ["ssh", "-p", str(port), "-i", info["identity_file"], "-o", f"UserKnownHostsFile={home / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{info['user']}@127.0.0.1", command]


def direct_ssh(info: dict, command: str) -> list[str]:
    """Straight to the login node (not through the proxy): setup and clean-up are not measured."""
    return ["ssh", "-p", str(info["port"]), "-i", info["identity_file"], "-o",
            f"UserKnownHostsFile={info['known_hosts']}", "-o", "BatchMode=yes",
            f"{info['user']}@{info['host']}", command]


def remove(info: dict, scratch: str) -> None:
    """Delete the bench's scratch (the 1 GB log); retried while the login node is unreachable
    (other sessions restart the test cluster now and then)."""
    deadline = time.monotonic() + 300
    while True:
        r = subprocess.run(direct_ssh(info, f"rm -rf {shlex.quote(scratch)}"), capture_output=True, timeout=120)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(5)
    if r.returncode != 0:
        print(f"could not delete {scratch}: {r.stderr.decode().strip()}", file=sys.stderr)


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def old_tree(dest: Path) -> Path | None:
    """The pre-fix revision's rv_tui, extracted from git (None when unreachable)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        data = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_REV, "rv_tui"], check=True,
                              capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=data, check=True)
    except (subprocess.CalledProcessError, OSError):
        return None
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--no-old", action="store_true", help="skip the pre-fix whole-file run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    info = json.loads((STATE / "cluster.json").read_text())
    proxy = CountingProxy(info["host"], int(info["port"]))
    work = Path(tempfile.mkdtemp(prefix="rv-bench-tail-"))
    home = work / "rv-home"
    scratch = f"{info['scratch']}/bench-tail-{uuid.uuid4().hex[:8]}"
    write_config(home, info, proxy.port, scratch)
    job_id = str(9_900_000 + uuid.uuid4().int % 90_000)
    logs = f"{scratch}/.rv/logs"
    log = f"{logs}/benchtail-{job_id}.out"
    q = shlex.quote
    size = args.size_mb << 20
    make = (f"mkdir -p {q(logs)} && yes 'step 123456 loss 0.123456 lr 3e-4 grad_norm 0.93 tokens/s 123456' "
            f"| head -c {size} > {q(log)} && echo >> {q(log)} && seq 1 100 | sed 's/^/final line /' >> {q(log)} "
            f"&& stat -c %s {q(log)}")
    env = {**os.environ, "RV_HOME": str(home)}
    env.pop("RV_DEBUG", None)
    runs: list[Run] = []
    try:
        t0 = time.monotonic()
        made = subprocess.run(direct_ssh(info, make), capture_output=True, text=True, timeout=600)
        if made.returncode != 0:
            print(f"could not create the log: {made.stderr.strip()}", file=sys.stderr)
            return 1
        file_bytes = int(made.stdout.split()[-1])
        print(f"remote log: {file_bytes / 2**20:.0f} MiB in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        expect = "final line 100"
        rv = [sys.executable, "-m", "rv_tui", "logs", job_id, "--out", "--tail", "100"]
        for _attempt in range(3):  # other sessions restart slurmctld now and then: not our figure
            run = measure("rv (tail -n on the login node)", rv, {**env, "PYTHONPATH": str(ROOT)},
                          proxy, expect, str(work))
            if run.exit_status == 0 or "restarting" not in run.note:
                break
            time.sleep(20)
        runs.append(run)
        runs.append(measure("ssh tail (OpenSSH, one command)",
                            ssh_argv(info, proxy.port, home, f"tail -n 100 {q(log)}"), env, proxy, expect, str(work)))
        need = 8 * file_bytes  # measured: ~6x the file for the old path (bytes + str + lines)
        if args.no_old:
            pass
        elif mem_available() < need:
            print(f"old whole-file run skipped: needs ~{need >> 20} MiB free", file=sys.stderr)
        elif (old := old_tree(work / "old")) is None:
            print(f"old whole-file run skipped: {OLD_REV} not reachable in git", file=sys.stderr)
        else:
            runs.append(measure(f"old rv ({OLD_REV}: whole file over SFTP)", rv,
                                {**env, "PYTHONPATH": str(old)}, proxy, expect, str(work)))
    finally:
        remove(info, scratch)
    new = runs[0]
    report = {"file_bytes": file_bytes, "runs": [asdict(r) for r in runs],
              "targets": {"bytes": TARGET_BYTES, "rss": TARGET_RSS},
              "meets_targets": new.bytes_down + new.bytes_up <= TARGET_BYTES and new.peak_rss <= TARGET_RSS
              and new.exit_status == 0 and new.last_line_ok}
    for r in runs[1:]:
        key = "old" if r.name.startswith("old") else "ssh"
        if r.exit_status != 0 or not r.last_line_ok:  # its cost still counts: it is the old path
            report[f"{key}_failed"] = r.note or f"exit {r.exit_status}"
        report[f"ratio_bytes_vs_{key}"] = round((new.bytes_down + new.bytes_up) / max(1, r.bytes_down + r.bytes_up), 6)
        report[f"ratio_rss_vs_{key}"] = round(new.peak_rss / max(1, r.peak_rss), 4)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"rv logs --tail 100 of a {file_bytes / 2**20:.0f} MiB remote log")
        print(f"{'run':44} {'exit':>4} {'secs':>7} {'KiB down':>12} {'KiB up':>9} {'peak RSS MiB':>13} last-line-ok")
        for r in runs:
            print(f"{r.name:44} {r.exit_status:>4} {r.seconds:>7.2f} {r.bytes_down / 1024:>12.1f} "
                  f"{r.bytes_up / 1024:>9.1f} {r.peak_rss / 2**20:>13.1f} {r.last_line_ok}"
                  + (f"  ({r.note})" if r.note else ""))
        for k, v in report.items():
            if k.startswith("ratio"):
                print(f"{k}: {v}")
        print(f"targets (<= 1 MiB transferred, <= 100 MiB RSS): {'met' if report['meets_targets'] else 'NOT met'}")
    return 0 if report["meets_targets"] else 1


if __name__ == "__main__":
    sys.exit(main())
