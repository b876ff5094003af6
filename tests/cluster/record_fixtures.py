#!/usr/bin/env python3
"""Record real Slurm outputs from the local test cluster into tests/fixtures/slurm/.

Why: parser unit tests must use real outputs (CONTRIBUTING.md), not hand-written ones. This
script makes the cluster partially busy (nodes allocated and mixed, jobs pending on Resources
and Priority, one completed job), runs each command as rvtest over SSH (so TZ=America/New_York,
like a Rivanna login), and writes each output plus a README listing the exact commands.

Run as root with the cluster up:  python3 tests/cluster/record_fixtures.py
It cancels all rvtest and rvother jobs before and after.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from load import ClusterLoad  # noqa: E402

OUT = HERE.parent / "fixtures" / "slurm"
PARTS = "gpu,gpu-mig,interactive-rtx3090,gpu-a6000,gpu-a40,gpu-a100-40,gpu-a100-80,gpu-v100,gpu-h200"
SQ_FMT = "%i|%j|%T|%M|%l|%P|%b|%N|%R|%S|%D"


def main() -> int:
    state = Path("/tmp/rv-test-cluster")
    import os
    state = Path(os.environ.get("RV_TEST_CLUSTER_DIR", str(state)))
    info = json.loads((state / "cluster.json").read_text())
    load = ClusterLoad(info["slurm_conf"], info["other_user"], info["user"])

    def ssh(cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-p", str(info["port"]), "-i", info["identity_file"], "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={info['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
             f"{info['user']}@{info['host']}", cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL)

    def sub(cmd: str) -> str:
        r = ssh(cmd)
        assert r.returncode == 0, (cmd, r.stderr)
        return r.stdout.strip().split(";")[0]

    def wait(pred, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            time.sleep(0.2)

    def state_of(jid: str) -> str:
        m = re.search(r"JobState=(\S+)", ssh(f"scontrol show job {jid}").stdout)
        return m.group(1) if m else ""

    users = (info["user"], info["other_user"])
    load.clear(users=users)
    OUT.mkdir(parents=True, exist_ok=True)

    # A completed job first (so it is still in squeue --json / scontrol for MinJobAge).
    done = sub("sbatch --parsable -A rvtest -J rv-done -p standard -t 5:00 -o /dev/null --wrap 'echo hi'")
    wait(lambda: state_of(done) == "COMPLETED", "completed job")
    # Other users' load: whole h200 partition, 2 of 3 a6000 nodes, half an a100-80 node.
    load.fill("gpu-h200", None, count=2, duration="2:00:00")
    load.fill("gpu-a6000", None, count=2, duration="1:30:00")
    load.fill("gpu-a100-80", "gpu:a100:4", count=1, duration="3:00:00")
    # rvtest's own jobs: running 2-node a40 job, running a6000 job (mixed node), pending ones.
    running = sub("sbatch --parsable -A rvtest -J rv-train-2n -p gpu-a40 -N 2 --ntasks-per-node=1 "
                  "--gres=gpu:a40:2 -t 2:59:00 -o /dev/null --wrap 'sleep 3600'")
    sub("sbatch --parsable -A rvtest -J rv-a6000 -p gpu-a6000 --gres=gpu:a6000:4 -t 1:00:00 -o /dev/null "
        "--wrap 'sleep 3600'")
    pend_res = sub("sbatch --parsable -A rvtest -J rv-h200 -p gpu-h200 --gres=gpu:h200:4 -t 2:59:00 -o /dev/null "
                   "--wrap 'sleep 60'")
    pend_prio = sub("sbatch --parsable -A rvtest -J rv-h200-b -p gpu-h200 --gres=gpu:h200:2 -t 1:00:00 -o /dev/null "
                    "--wrap 'sleep 60'")
    wait(lambda: state_of(running) == "RUNNING", "running job")

    def reasons() -> tuple[str, str]:
        out = ssh(f"squeue -h -j {pend_res},{pend_prio} -o '%i %r'").stdout.split()
        d = dict(zip(out[::2], out[1::2]))
        return d.get(pend_res, ""), d.get(pend_prio, "")

    wait(lambda: reasons() == ("Resources", "Priority"), f"pending reasons (got {reasons()})", 30)

    recorded: list[tuple[str, str, str]] = []  # (file, command, note)

    def rec(name: str, cmd: str, note: str = "", want_rc: int | None = 0) -> str:
        r = ssh(cmd)
        if want_rc is not None:
            assert r.returncode == want_rc, (cmd, r.returncode, r.stderr)
        (OUT / name).write_text(r.stdout)
        recorded.append((name, cmd, note or f"exit {r.returncode}"))
        return r.stdout

    rec("date.txt", "date +%Y-%m-%dT%H:%M:%S%z", "login-node time, TZ=America/New_York")
    rec("sinfo_node_O_pipe.txt",
        "sinfo -N -h -O 'NodeHost:|,Partition:|,StateLong:|,Gres:|,GresUsed:|,CPUsState:|,Memory:|,Features:|'")
    rec("sinfo_node_pipe.txt", "sinfo -N -h -o '%N|%P|%T|%G|%C|%m|%f'")
    rec("sinfo_node_rv.txt", f"sinfo --Node -p {PARTS} -o '%N %T %G %C %m' --noheader",
        "the original rv's sinfo command line")
    rec("sinfo_summary.txt", "sinfo", "default sinfo (partition summary)")
    rec("sinfo.json", "sinfo --json")
    rec("squeue_all_pipe.txt", f"squeue --all -h -o '{SQ_FMT}'", "all users")
    rec("squeue_user_pipe.txt", f"squeue --all -u rvtest -h -o '{SQ_FMT}'")
    rec("squeue.json", "squeue --json", "includes jobs that ended in the last MinJobAge (300 s)")
    rec("scontrol_show_job_running.txt", f"scontrol show job {running}", "2-node running job")
    rec("scontrol_show_job_pending_resources.txt", f"scontrol show job {pend_res}")
    rec("scontrol_show_job_pending_priority.txt", f"scontrol show job {pend_prio}")
    rec("scontrol_show_job_completed.txt", f"scontrol show job {done}")
    rec("scontrol_show_job_invalid.txt", "scontrol show job 999999 2>&1", "stderr merged; exit 1",
        want_rc=1)
    rec("scontrol_show_node.txt", "scontrol show node", "all nodes")
    rec("scontrol_show_node_mixed.txt", "scontrol show node udc-an36-1", "a100-80 node, 4/8 GPUs used")
    rec("sbatch_test_only_now.txt",
        "sbatch --test-only -p gpu-a100-80 --gres=gpu:a100:2 -t 2:00:00 --wrap 'sleep 1' 2>&1",
        "startable now; the line is on stderr (merged here)")
    rec("sbatch_test_only_later.txt",
        "sbatch --test-only -p gpu-h200 --gres=gpu:h200:8 -t 2:00:00 --wrap 'sleep 1' 2>&1",
        "busy partition: later start time")
    rec("sbatch_test_only_err_partition.txt",
        "sbatch --test-only -p gpu-nope --gres=gpu:a100:2 -t 2:00:00 --wrap 'sleep 1' 2>&1",
        "error, exit 1", want_rc=1)
    rec("sbatch_test_only_err_time.txt",
        "sbatch --test-only -p interactive-rtx3090 --gres=gpu:rtx3090:1 -t 1-00:00:00 --wrap 'sleep 1' 2>&1",
        "error (time limit over MaxTime 12:00:00), exit 1", want_rc=1)
    rec("sbatch_test_only_err_gres.txt",
        "sbatch --test-only -p gpu-a6000 --gres=gpu:a6000:9 -t 1:00:00 --wrap 'sleep 1' 2>&1",
        "error (more GPUs than any node has), exit 1", want_rc=1)
    rec("sbatch_parsable.txt", "sbatch --parsable -A rvtest -J rv-parsable -p standard -t 1:00 -o /dev/null --wrap 'true'")
    rec("sbatch_submit.txt", "sbatch -A rvtest -J rv-submit -p standard -t 1:00 -o /dev/null --wrap 'true'")
    rec("scancel_unknown.txt", "scancel 999999; echo rc=$?", "unknown id: silent, exit 0")

    lines = [
        "# Recorded Slurm outputs (real, from the local test cluster)",
        "",
        "Produced by `python3 tests/cluster/record_fixtures.py` against the cluster in `tests/cluster/`",
        "(Slurm 22.05.8, Debian 12). Every command ran as `rvtest` over SSH on the login node, so",
        "times are in `TZ=America/New_York` while the host is UTC. Cluster state while recording:",
        "",
        "- rvother (other user): both gpu-h200 nodes (exclusive), 2 of 3 gpu-a6000 nodes (exclusive),",
        "  `gpu:a100:4` on one gpu-a100-80 node.",
        f"- rvtest: running 2-node a40 job `{running}` (rv-train-2n), running `gpu:a6000:4` job (mixed node),",
        f"  pending `{pend_res}` (Reason=Resources) and `{pend_prio}` (Reason=Priority) on gpu-h200,",
        f"  completed `{done}`.",
        "",
        "| file | command | note |",
        "|---|---|---|",
    ]
    for name, cmd, note in recorded:
        lines.append(f"| `{name}` | `{cmd.replace('|', chr(92) + '|')}` | {note} |")
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    load.clear(users=users)
    print(f"recorded {len(recorded)} files into {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
