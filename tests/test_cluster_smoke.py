"""Smoke tests of the local Slurm test cluster itself (tests/cluster/).

Why: every end-to-end test trusts this cluster to behave like Rivanna in the ways rv-tui relies
on (partitions, typed GPU gres, multi-node jobs with per-node hostnames, fast backfill, test-only
start estimates, SSH login, jobs that call Slurm commands). If one of these breaks, these tests
say so directly instead of some allocator test failing obscurely.
"""
from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import time
import uuid

import pytest

pytestmark = pytest.mark.cluster

PARTITIONS = {"gpu", "gpu-mig", "interactive-rtx3090", "gpu-a6000", "gpu-a40", "gpu-a100-40",
              "gpu-a100-80", "gpu-v100", "gpu-h200", "standard", "interactive"}
GRES_TYPES = {"a6000", "a40", "a100", "v100", "h200", "rtx3090", "1g.10gb"}


def ssh(info, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command on the login node as the test user with the OpenSSH client."""
    argv = ["ssh", "-p", str(info.port), "-i", info.identity_file,
            "-o", f"UserKnownHostsFile={info.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{info.user}@{info.host}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ok(info, command: str) -> str:
    r = ssh(info, command)
    assert r.returncode == 0, f"{command!r} failed ({r.returncode}): {r.stderr}"
    return r.stdout


def poll(fn, timeout: float, what: str, interval: float = 0.2):
    """Return fn()'s first truthy value; fail with `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def job_state(info, job_id: str) -> str:
    out = ssh(info, f"scontrol show job {job_id}").stdout
    m = re.search(r"JobState=(\S+)", out)
    return m.group(1) if m else ""


def wait_state(info, job_id: str, states: set[str], timeout: float = 60) -> str:
    return poll(lambda: (s := job_state(info, job_id)) in states and s, timeout,
                f"job {job_id} to reach {states}")


@pytest.fixture
def workdir(slurm_cluster) -> str:
    d = f"{slurm_cluster.scratch}/smoke-{uuid.uuid4().hex[:8]}"
    ok(slurm_cluster, f"mkdir -p {d}")
    yield d
    ssh(slurm_cluster, f"rm -rf {d}")


def test_login_node_ssh(slurm_cluster):
    """Key login works, as rvtest, with Rivanna's time zone and the cluster's slurm.conf."""
    try:
        import asyncssh  # noqa: F401
    except ImportError:
        out = ok(slurm_cluster, 'echo "$(id -un) $TZ $SLURM_CONF"; command -v sbatch allocations hdquota')
    else:
        async def go() -> str:
            async with asyncssh.connect(
                slurm_cluster.host, port=slurm_cluster.port, username=slurm_cluster.user,
                client_keys=[slurm_cluster.identity_file], known_hosts=slurm_cluster.known_hosts,
            ) as conn:
                r = await conn.run('echo "$(id -un) $TZ $SLURM_CONF"; command -v sbatch allocations hdquota',
                                   check=True)
                return str(r.stdout)
        out = asyncio.run(go())
    first, *tools = out.strip().splitlines()
    assert first.split() == [slurm_cluster.user, "America/New_York", slurm_cluster.slurm_conf]
    assert [t.rsplit("/", 1)[1] for t in tools] == ["sbatch", "allocations", "hdquota"]


def test_wrong_key_is_refused(slurm_cluster, tmp_path):
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    r = ssh(slurm_cluster.__class__(**{**slurm_cluster.__dict__, "identity_file": str(key)}), "true")
    assert r.returncode == 255 and "Permission denied" in r.stderr


def test_sinfo_partitions_and_gpu_gres(slurm_cluster):
    out = ok(slurm_cluster, "sinfo -h -N -o '%P|%G|%f'")
    parts, types = set(), set()
    for line in out.splitlines():
        part, gres, _features = line.split("|")
        parts.add(part.rstrip("*"))
        m = re.match(r"gpu:([^:]+):(\d+)", gres)
        if m:
            types.add(m.group(1))
    assert parts == PARTITIONS
    assert types == GRES_TYPES
    assert "gpupod,a100_80gb" in out and "a100_40gb" in out
    assert re.search(r"^gpu-mig\|gpu:1g\.10gb:56", out, re.M)


def test_site_tool_standins(slurm_cluster):
    alloc = ok(slurm_cluster, "allocations")
    assert re.search(r"^rvtest\s+\d+\s+\d+\s+\d+", alloc, re.M)
    quota = ok(slurm_cluster, "hdquota")
    assert re.search(r"^(.+?)\s+(/\S+)\s+([\d.]+)\s+(\S+)\s+([\d.]+)\s+(\S+)\s+([\d.]+)\s+(\S+)\s+(\d+)%",
                     quota, re.M)


def test_two_node_a6000_job_per_node_output(slurm_cluster, workdir):
    script = f"""#!/bin/bash
#SBATCH -J smoke-2node
#SBATCH -p gpu-a6000
#SBATCH -N 2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:a6000:2
#SBATCH -t 10:00
#SBATCH -o {workdir}/batch-%j.out
srun --output={workdir}/node-%t.out bash -c 'echo "$(hostname) $SLURM_PROCID $(id -un)"'
"""
    ok(slurm_cluster, f"cat > {workdir}/job.sh <<'EOF'\n{script}EOF")
    job_id = ok(slurm_cluster, f"cd {workdir} && sbatch --parsable job.sh").strip()
    assert re.fullmatch(r"\d{7}", job_id)
    assert wait_state(slurm_cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED"}) == "COMPLETED"
    rows = [ok(slurm_cluster, f"cat {workdir}/node-{t}.out").split() for t in (0, 1)]
    hosts = [r[0] for r in rows]
    assert [r[1] for r in rows] == ["0", "1"]
    assert {r[2] for r in rows} == {slurm_cluster.user}
    assert hosts[0] != hosts[1] and all(h.startswith("udc-an37-") for h in hosts)
    nodelist = ok(slurm_cluster, f"scontrol show job {job_id}")
    assert re.search(r"\bNodeList=udc-an37-\[\d[-,]\d\]", nodelist)


def test_pending_job_starts_after_blocker_cancelled(slurm_cluster, cluster_load, clean_queue):
    blockers = cluster_load.fill("gpu-h200", None, count=2, duration="30:00")
    cluster_load.wait_state(blockers, ("RUNNING",))
    job_id = ok(slurm_cluster, "sbatch --parsable -p gpu-h200 --gres=gpu:h200:4 -t 10:00 "
                               "-o /dev/null --wrap 'sleep 60'").strip()
    reason = poll(lambda: (o := ok(slurm_cluster, f"squeue -h -j {job_id} -o '%T %r'").split())
                  and o[0] == "PENDING" and o[1] in ("Resources", "Priority") and o[1],
                  10, "the job to pend on Resources")
    assert reason in ("Resources", "Priority")
    cluster_load.slurm("scancel", blockers[0])
    wait_state(slurm_cluster, job_id, {"RUNNING"}, timeout=20)
    ok(slurm_cluster, f"scancel {job_id}")


def test_test_only_prints_start_estimate(slurm_cluster):
    r = ssh(slurm_cluster, "sbatch --test-only -p gpu-a100-80 --gres=gpu:a100:2 -t 2:00:00 "
                           "--constraint='gpupod&a100_80gb' --wrap 'sleep 1'")
    assert r.returncode == 0, r.stderr
    m = re.search(r"Job \d+ to start at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) using \d+ processors on nodes "
                  r"(udc-an36-\d) in partition gpu-a100-80", r.stderr)
    assert m, r.stderr
    bad = ssh(slurm_cluster, "sbatch --test-only -p gpu-a6000 --gres=gpu:a6000:1 -t 4-00:00:00 --wrap 'sleep 1'")
    assert bad.returncode != 0 and "time limit" in bad.stderr.lower()


def test_job_calls_slurm_commands_from_compute_node(slurm_cluster, workdir, clean_queue):
    """A job (as rvtest) can squeue, sbatch a sibling and scancel it from the compute node."""
    script = f"""#!/bin/bash
#SBATCH -p standard -t 5:00 -o {workdir}/out-%j.txt
sib=$(sbatch --parsable -p standard -t 5:00 -o /dev/null --wrap 'sleep 300')
squeue -h -j "$sib" -o '%i' | grep -q "$sib" && echo "seen $sib"
scancel "$sib" && echo "cancelled $sib"
echo "user $(id -un) host $(hostname)"
"""
    ok(slurm_cluster, f"cat > {workdir}/job.sh <<'EOF'\n{script}EOF")
    job_id = ok(slurm_cluster, f"cd {workdir} && sbatch --parsable job.sh").strip()
    assert wait_state(slurm_cluster, job_id, {"COMPLETED", "FAILED"}) == "COMPLETED"
    out = ok(slurm_cluster, f"cat {workdir}/out-{job_id}.txt")
    sib = re.search(r"cancelled (\d+)", out)
    assert sib and f"seen {sib.group(1)}" in out, out
    assert re.search(rf"user {slurm_cluster.user} host udc-ba30-\d", out)
    assert wait_state(slurm_cluster, sib.group(1), {"CANCELLED", "COMPLETED"}) == "CANCELLED"
