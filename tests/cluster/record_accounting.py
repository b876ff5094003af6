#!/usr/bin/env python3
"""Record real accounting outputs (sacct, sacctmgr qos, scontrol partitions) from the local test
cluster into tests/fixtures/slurm/ for tests/test_accounting.py.

Submits, as rvtest (runuser, the login node's TZ): a job exiting 3, one killed by SIGKILL, one cancelled, one timing
out (-t 1), one over its --mem (OverMemoryKill), one requeued once, and a 2-node job that never starts (--begin=now+1hour, then cancelled)
whose name holds a '|'; waits until they ended (about 90 s), then runs rv's own sacct command.
Run as root with the cluster up:  python3 tests/cluster/record_accounting.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
from rv_tui.slurm import accounting as acct  # noqa: E402

OUT = HERE.parent / "fixtures" / "slurm"
STATE = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster"))

SUBMIT = r"""cd /scratch/rvtest && mkdir -p acct-rec && cd acct-rec &&
f=$(sbatch --parsable -J rec-failed -p standard -t 5 --wrap "echo failing; exit 3")
k=$(sbatch --parsable -J rec-killed -p standard -t 5 --wrap 'kill -9 $$')
c=$(sbatch --parsable -J rec-cancel -p gpu-v100 --gres=gpu:v100:1 -t 5 -o "%x-%j.log" --wrap "sleep 300")
t=$(sbatch --parsable -J rec-timeout -p gpu-h200 --gres=gpu:h200:1 -t 1 -o /scratch/rvtest/acct-rec/t-%j.out --wrap "sleep 300")
o=$(sbatch --parsable -J rec-mem -p standard --mem=100M -t 5 --wrap "python3 -c 'b=bytearray(600*1024*1024); import time; time.sleep(20)'")
r=$(sbatch --parsable -J rec-requeue -p standard -t 5 --requeue --wrap "sleep 300")
p=$(sbatch --parsable -J "rec name|with sep" -p gpu-a6000 --gres=gpu:a6000:2 -N 2 -t 5 --begin=now+1hour --wrap 'echo "a|b"')
echo $f $k $c $t $o $r $p"""


def main() -> int:
    info = json.loads((STATE / "cluster.json").read_text())
    env = dict(os.environ, SLURM_CONF=info["slurm_conf"])

    def ssh(cmd: str) -> str:
        """As rvtest with the login node's TZ (runuser: the shared sshd may be down for a
        fault test)."""
        return subprocess.run(
            ["runuser", "-u", info["user"], "--", "env", f"SLURM_CONF={info['slurm_conf']}",
             "TZ=America/New_York", "sh", "-c", cmd],
            capture_output=True, text=True, check=True, cwd="/tmp").stdout

    def root(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=env)

    def state(jid: str) -> str:
        return root("squeue", "-h", "-j", jid, "-o", "%T").stdout.strip()

    ids = ssh(SUBMIT).split()
    print("submitted", ids, flush=True)
    f, k, c, t, o, r, p = ids

    def wait(pred, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out recording: { {j: state(j) for j in ids} }")
            if not any(state(j) for j in ids):
                raise SystemExit("every job vanished (someone's clean_queue?): run again")
            time.sleep(0.5)

    wait(lambda: state(c) == "RUNNING" and state(r) == "RUNNING", 30)
    root("scancel", c)
    # requeued once (a requeued job then waits 2 min for its BeginTime, which cannot be moved),
    # then cancelled: a REQUEUED record and the final CANCELLED one
    root("scontrol", "requeue", r)
    wait(lambda: state(r) == "PENDING", 30)
    root("scancel", r)
    wait(lambda: all(state(j) not in ("RUNNING", "PENDING", "COMPLETING", "CONFIGURING")
                     for j in (f, k, c, t, o, r)), 150)
    out = ssh(acct.sacct_command(ids))
    (OUT / "sacct_final_states.txt").write_text(out)
    (OUT / "sacctmgr_qos.txt").write_text(ssh(acct.QOS_COMMAND))
    (OUT / "scontrol_partitions.txt").write_text(ssh(acct.PARTITION_QOS_COMMAND))
    root("scancel", p)
    print(" ".join(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
