#!/usr/bin/env python3
"""Background load for the local Slurm test cluster: other users' jobs that make partitions busy.

Why: race, backfill and wait-estimate tests need a cluster where some GPUs are taken by someone
else. Jobs are submitted as the second test user (`rvother`) with `runuser`, so they never show
up under `squeue -u rvtest` and `scancel -u rvtest` never touches them. Needs root.

Python:
    from load import ClusterLoad            # (conftest loads this file by path)
    load = ClusterLoad.from_state_dir()
    ids = load.fill("gpu-a6000", "gpu:a6000:8", count=3, duration="1:00:00")
    load.clear()

CLI:
    python3 tests/cluster/load.py fill gpu-a6000 --gres gpu:a6000:8 --count 3 --duration 1:00:00
    python3 tests/cluster/load.py clear
    python3 tests/cluster/load.py list
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE = "/tmp/rv-test-cluster"


def to_seconds(duration: str | int) -> int:
    """Slurm walltime ('MM', 'MM:SS', 'HH:MM:SS', 'D-HH[:MM[:SS]]') or int seconds -> seconds."""
    if isinstance(duration, int):
        return duration
    days = 0
    if "-" in duration:
        d, duration = duration.split("-", 1)
        days = int(d)
        parts = [int(x) for x in duration.split(":")]
        while len(parts) < 3:
            parts.append(0)
        h, m, s = parts
    else:
        parts = [int(x) for x in duration.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, s = 0, parts[0], parts[1]
        else:
            h, m, s = parts
    return days * 86400 + h * 3600 + m * 60 + s


def fmt_time(seconds: int) -> str:
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


@dataclass(frozen=True)
class ClusterLoad:
    slurm_conf: str
    other_user: str = "rvother"
    user: str = "rvtest"

    @classmethod
    def from_state_dir(cls, state_dir: str | None = None) -> "ClusterLoad":
        state = Path(state_dir or os.environ.get("RV_TEST_CLUSTER_DIR", DEFAULT_STATE))
        info = json.loads((state / "cluster.json").read_text())
        return cls(slurm_conf=info["slurm_conf"], other_user=info["other_user"], user=info["user"])

    # -- low level

    def _env(self) -> dict:
        env = dict(os.environ)
        env["SLURM_CONF"] = self.slurm_conf
        return env

    def slurm(self, *argv: str, as_user: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command as root (default) or as as_user (via runuser)."""
        cmd = list(argv)
        if as_user:
            cmd = ["runuser", "-u", as_user, "--", "env", f"SLURM_CONF={self.slurm_conf}", *cmd]
        r = subprocess.run(cmd, text=True, capture_output=True, env=self._env(), cwd="/tmp")
        if check and r.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def submit(self, *sbatch_args: str, duration: str | int = "1:00:00", name: str = "load") -> str:
        """Submit one sleep job as other_user; returns its job id. Extra args go to sbatch."""
        secs = to_seconds(duration)
        r = self.slurm("sbatch", "--parsable", "-J", name, "-D", "/tmp", "-o", "/dev/null",
                       "-t", fmt_time(max(60, secs)), *sbatch_args, "--wrap", f"sleep {secs}",
                       as_user=self.other_user)
        return r.stdout.strip().split(";")[0]

    # -- the API tests use

    def fill(self, partition: str, gres: str | None = None, count: int = 1,
             duration: str | int = "1:00:00", *extra: str, nodes: int = 1) -> list[str]:
        """Submit `count` jobs on `partition`, each holding `gres` (e.g. "gpu:a6000:8") on `nodes`
        node(s), or, with gres=None, each holding a whole node (--exclusive). Returns job ids.
        Jobs run `duration` (walltime string or seconds) unless cleared."""
        ids = []
        for _ in range(count):
            args = ["-p", partition, "-N", str(nodes)]
            args += [f"--gres={gres}"] if gres else ["--exclusive"]
            ids.append(self.submit(*args, *extra, duration=duration))
        return ids

    def jobs(self, user: str | None = None) -> dict[str, str]:
        """{job id: state} of other_user's (or user's) jobs known to slurmctld."""
        r = self.slurm("squeue", "-h", "-u", user or self.other_user, "-o", "%i %T", check=False)
        out = {}
        for line in r.stdout.splitlines():
            if line.strip():
                jid, state = line.split()
                out[jid] = state
        return out

    def wait_state(self, job_ids: list[str], states: tuple[str, ...] = ("RUNNING",),
                   timeout: float = 30.0) -> dict[str, str]:
        """Poll until every job is in one of `states`; returns the final {id: state}."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.slurm("squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T", check=False)
            cur = dict(line.split() for line in r.stdout.splitlines() if line.strip())
            if all(cur.get(j) in states for j in job_ids):
                return cur
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {job_ids} not in {states} after {timeout}s: {cur}")
            time.sleep(0.2)

    def clear(self, wait: bool = True, timeout: float = 30.0, users: tuple[str, ...] | None = None) -> None:
        """Cancel all jobs of other_user (or `users`); with wait, until none is pending/running/
        completing (so their resources are free again)."""
        users = users or (self.other_user,)
        for u in users:
            self.slurm("scancel", "-u", u, check=False)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while True:
            busy = {}
            for u in users:
                busy.update({j: s for j, s in self.jobs(u).items()
                             if s in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED")})
            if not busy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still active after clear: {busy}")
            time.sleep(0.2)


    # -- advanced reservations (root): a real, bounded backfill window

    def partition_nodes(self, partition: str) -> list[str]:
        """Node names of `partition` (expanded, sorted)."""
        r = self.slurm("sinfo", "-h", "-N", "-p", partition, "-o", "%N")
        return sorted({line.strip() for line in r.stdout.splitlines() if line.strip()})

    def reserve(self, partition: str, starts_in: str | int, duration: str | int = "1:00:00",
                name: str | None = None) -> str:
        """Reserve every node of `partition` for root from now+`starts_in` for `duration`
        (walltime strings or seconds); returns the reservation name (pass it to `release`).

        Until it starts, a job fits on those nodes only if it ends before `starts_in`: a genuine
        window shorter than any longer request, which is what backfill probing must find.
        MAINT+IGNORE_JOBS let it overlap jobs that are already running (their nodes stay busy)."""
        name = name or f"rvload_{partition}_{os.getpid()}_{time.monotonic_ns() % 10**6}"
        start = max(60, to_seconds(starts_in))
        self.slurm("scontrol", "create", "reservation", f"ReservationName={name}",
                   f"StartTime=now+{start}seconds",
                   f"Duration={fmt_time(max(60, to_seconds(duration)))}",
                   f"Nodes={','.join(self.partition_nodes(partition))}", "Users=root",
                   "Flags=MAINT,IGNORE_JOBS")
        return name

    def release(self, name: str) -> None:
        """Delete reservation `name` (no error when it is already gone)."""
        r = self.slurm("scontrol", "delete", f"ReservationName={name}", check=False)
        if r.returncode != 0 and "not found" not in (r.stderr + r.stdout).lower() \
                and name in self.reservations():
            raise RuntimeError(f"scontrol delete reservation {name} failed: {r.stderr.strip()}")

    def reservations(self) -> list[str]:
        """Names of the reservations slurmctld knows about."""
        r = self.slurm("scontrol", "-o", "show", "reservation", check=False)
        return [tok.split("=", 1)[1] for line in r.stdout.splitlines()
                for tok in line.split()[:1] if tok.startswith("ReservationName=")]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill", help="submit rvother jobs on a partition")
    f.add_argument("partition")
    f.add_argument("--gres", default=None, help="e.g. gpu:a6000:8 (default: whole nodes)")
    f.add_argument("--count", type=int, default=1)
    f.add_argument("--nodes", type=int, default=1)
    f.add_argument("--duration", default="1:00:00")
    sub.add_parser("clear", help="cancel all rvother jobs")
    sub.add_parser("list", help="list rvother jobs")
    a = ap.parse_args(argv)
    load = ClusterLoad.from_state_dir()
    if a.cmd == "fill":
        print("\n".join(load.fill(a.partition, a.gres, a.count, a.duration, nodes=a.nodes)))
    elif a.cmd == "clear":
        load.clear()
    else:
        for jid, st in load.jobs().items():
            print(jid, st)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
