#!/usr/bin/env python3
"""Record one moment of the test cluster as the dashboard's poll sees it, both ways.

Why: :mod:`rv_tui.slurm.pollquery` replaces three ``squeue`` calls (queue depth, the user's
jobs, their restart counts) with one ``scontrol show job -o``; its parser must give what the
squeue parsers give. This records the raw ``scontrol show job -o`` output and the three squeue
outputs within the same second (no job changes state in between: the jobs are held or long
sleeps), as rvtest over SSH (TZ of a Rivanna login). It submits and cancels only its own jobs.

Run with the cluster up:  python3 tests/cluster/record_poll_fixture.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from rv_tui.slurm import builders as b  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "slurm"


def main() -> int:
    state = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster"))
    info = json.loads((state / "cluster.json").read_text())

    def ssh(cmd: str) -> str:
        r = subprocess.run(
            ["ssh", "-p", str(info["port"]), "-i", info["identity_file"], "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={info['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
             f"{info['user']}@{info['host']}", cmd], capture_output=True, text=True,
            stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (cmd, r.stderr)
        return r.stdout

    subs = [
        "--hold -J 'rv poll two-node' -p gpu -N 2 --ntasks-per-node=1 --gres=gpu:1 -t 10 --comment rvgroup:gpoll",
        "--hold -J rv-poll-a100 -p gpu --gres=gpu:a100:2 -t 10",
        "--hold -J rv-poll-array -a 1-3 -p standard -t 10",
        "-J rv-poll-run -p standard -t 10 --wrap-run",
    ]
    ids = []
    try:
        for s in subs:
            run = s.endswith("--wrap-run")
            s = s.removesuffix("--wrap-run")
            wrap = "sleep 600" if run else "sleep 1"
            ids.append(ssh(f"sbatch --parsable -A {info['user']} {s} -o /dev/null --wrap '{wrap}'").strip())
        ssh(f"for i in $(seq 50); do squeue -h -j {ids[-1]} -t R -o %i | grep -q . && exit 0; sleep 0.2; done; exit 1")
        user = info["user"]
        out = ssh("scontrol show job -o; echo @@; " + b.squeue_jobs_command(user, None) + "; echo @@; "
                  + b.squeue_restarts_command(user) + "; echo @@; " + b.squeue_queue_command())
        raw, jobs, restarts, queue = out.split("@@\n")
        (OUT / "poll_scontrol_jobs.txt").write_text(raw)
        (OUT / "poll_squeue_jobs.txt").write_text(jobs)
        (OUT / "poll_squeue_restarts.txt").write_text(restarts)
        (OUT / "poll_squeue_queue.txt").write_text(queue)
        print("recorded", ids, "as", user)
    finally:
        if ids:
            ssh("scancel " + " ".join(i.split(";")[0] for i in ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
