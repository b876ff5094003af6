"""Hardware retry for ``rv run -f``: the stderr matcher, the one-round-trip tail command (hostile
paths), runtime measured from the job's own start, strategy filtering after exclusion, and end to
end on the real cluster: a job that prints "CUDA error: unknown error" and exits 1 on its first
node is raced again with that node excluded (``#SBATCH --exclude``) and succeeds."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from rv_tui.allocator.model import Strategy, StrategyKind
from rv_tui.cli.main import main as rv_main
from rv_tui.cluster.base import ClusterSnapshot, JobInfo, NodeState
from rv_tui.jobs.retry import (
    diagnose, match_hardware_error, runtime_s, split_tails, strategies_avoiding, tail_command,
    union_excludes,
)


@pytest.mark.parametrize("line", [
    "RuntimeError: CUDA error: unknown error",
    "CUDA Error: Unknown Error (device 0)",
    "Failed to get device handle for GPU 2",
    "cudaErrorUnknown: unspecified launch failure",
    "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.",
    "kernel: uncorrectable ECC error encountered",
    "torch.distributed.DistBackendError: NCCL error in: ..., unhandled system error (run with NCCL_DEBUG=INFO)",
    "pynvml.NVMLError_Unknown: Unknown Error",
])
def test_matcher_finds_hardware_failures(line: str) -> None:
    text = f"epoch 0\n{line}\nTraceback (most recent call last):\n"
    assert match_hardware_error(text) == line.strip()


@pytest.mark.parametrize("text", [
    "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "CUDA error: device-side assert triggered",
    "ModuleNotFoundError: No module named 'torch'",
    "NCCL WARN Connect to 10.0.0.1 failed",
    "nvmlerror_unknown",  # the NVML pattern is case-sensitive, as in the original
    "",
])
def test_matcher_ignores_program_errors(text: str) -> None:
    assert match_hardware_error(text) is None


def test_tail_command_quotes_and_splits() -> None:
    hostile = "/scratch/u/.rv/logs/x'; rm -rf ~; echo '$(id)`id`-1.err"
    cmd = tail_command([(hostile, 100), ("/s/a.node0.err", 50)])
    assert "'\"'\"'" in cmd and "tail -n 100 -- '/scratch/u/.rv/logs/x" in cmd and "tail -n 50" in cmd
    out = subprocess.run(["sh", "-c", cmd.replace(hostile, "/nonexistent/x")], capture_output=True,
                         text=True, check=True).stdout
    assert split_tails(out, 2) == ["", ""]
    assert split_tails("a\nb\n___RV_TAIL_END___\nc___RV_TAIL_END___\n", 3) == ["a\nb\n", "c", ""]


def test_runtime_is_the_jobs_own_not_queue_wait() -> None:
    t0 = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    queued_long = JobInfo("1", "n", "u", "FAILED", "p", elapsed_s=42, submit_time=t0 - timedelta(hours=5),
                          start_time=t0)
    assert runtime_s(queued_long, t0 + timedelta(hours=1)) == 42  # Slurm's Elapsed wins
    no_elapsed = JobInfo("1", "n", "u", "FAILED", "p", start_time=t0, submit_time=t0 - timedelta(hours=3))
    assert runtime_s(no_elapsed, t0 + timedelta(seconds=30)) == 30
    assert runtime_s(JobInfo("1", "n", "u", "PENDING", "p"), None) is None


def _strategy(partition: str, gtype: str, nodes: int, per_node: int) -> Strategy:
    return Strategy(id=f"{partition}-{nodes}x{per_node}", label="", gpu_type=gtype, partition=partition,
                    nodes=nodes, gpus_per_node=per_node, kind=StrategyKind.DIRECT, walltime_s=60,
                    time_min_s=None, est_wait_s=0, est_su=0, mem="1G", cpus_per_task=1, constraint=None,
                    total_time_s=60)


def test_strategies_avoiding_excluded_nodes() -> None:
    node = lambda name, part: NodeState(name, (part,), "idle", "a6000", 4, 0)
    snap = ClusterSnapshot(datetime.now(timezone.utc), (node("n1", "gpu-a6000"), node("n2", "gpu-a6000"),
                                                        node("v1", "gpu-v100")))
    s1, s2, sv = _strategy("gpu-a6000", "a6000", 1, 4), _strategy("gpu-a6000", "a6000", 2, 2), \
        _strategy("gpu-v100", "a6000", 1, 1)
    assert strategies_avoiding([s1, s2, sv], snap, ["n1"]) == [s1, sv]  # 2 nodes needed, 1 left
    assert strategies_avoiding([s1, s2], snap, ["n1", "n2"]) == []
    assert union_excludes(("a", "b"), ["b", "c"]) == ("a", "b", "c")


async def test_no_retry_without_logs_on_the_demo(tmp_path, monkeypatch) -> None:
    """The demo has no hardware faults (and no ``tail``): diagnose says no, never raises."""
    monkeypatch.setenv("RV_HOME", str(tmp_path))
    from rv_tui.cluster.demo import DemoCluster

    c = DemoCluster(seed=1, speed=0)
    d = await diagnose(c, "999999", name="x", nodes=("udc-an36-1",))
    assert not d.retry and d.evidence is None


class LocalShellCluster:
    """Runs the real commands in a local ``sh`` with ``scratch`` in a temp dir (what a login node
    would do); ``jobs`` returns one fixed record."""

    is_demo = False
    name = "local"
    user = "u"

    def __init__(self, scratch: str, info: JobInfo) -> None:
        self.scratch = scratch
        self.info = info

    async def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def jobs(self, job_ids=None, *, all_users=False):
        return [self.info]

    async def exec(self, command: str, *, timeout: float | None = None):
        from rv_tui.cluster.base import ExecResult

        r = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
        return ExecResult(command, r.returncode, r.stdout, r.stderr)


def _multi_node(tmp_path, *, elapsed: int = 12) -> LocalShellCluster:
    logs = tmp_path / ".rv" / "logs"
    logs.mkdir(parents=True)
    for i in range(2):
        (logs / f"train-123.node{i}.out").write_text("step 1\n")
        (logs / f"train-123.node{i}.err").write_text(
            "warn\n" + ("torch.distributed.DistBackendError: NCCL error: unhandled system error\n" if i else ""))
    (logs / "train-123.err").write_text("srun: error: task 1 exited with exit code 1\n")
    info = JobInfo("123", "train", "u", "FAILED", "gpu", nodes=("gpu-n1", "gpu-n2"), num_nodes=2,
                   elapsed_s=elapsed, exit_code=1)
    return LocalShellCluster(str(tmp_path), info)


async def test_diagnose_names_the_failed_node_of_a_multi_node_job(tmp_path) -> None:
    c = _multi_node(tmp_path)
    d = await diagnose(c, "123")  # type: ignore[arg-type]
    assert d.retry and d.failed_nodes == ("gpu-n2",) and d.runtime_s == 12
    assert "unhandled system error" in (d.evidence or "")
    last = await diagnose(c, "123", attempt=2)  # type: ignore[arg-type]
    assert not last.retry and last.failed_nodes == ("gpu-n2",) and "already retried 2" in last.reason


async def test_diagnose_respects_the_runtime_window(tmp_path) -> None:
    d = await diagnose(_multi_node(tmp_path, elapsed=3600), "123")  # type: ignore[arg-type]
    assert not d.retry and d.evidence and "3600 s" in d.reason


# ----------------------------------------------------------------------------- real cluster


@pytest.mark.cluster
def test_hardware_failure_is_retried_without_the_node(capsys, rv_home, own_jobs, tmp_path, monkeypatch,
                                                      slurm_cluster) -> None:
    work = tmp_path / "not-a-project"
    work.mkdir()
    monkeypatch.chdir(work)
    marker = f"{slurm_cluster.scratch}/retry-{uuid.uuid4().hex}"
    # first run: record the node, fake a dead GPU, exit 1; any later run: succeed
    script = (f'if [ -e {marker} ]; then echo "ok on $SLURMD_NODENAME" >> {marker}; exit 0; fi; '
              f'echo "$SLURMD_NODENAME" > {marker}; echo "RuntimeError: CUDA error: unknown error" >&2; exit 1')
    code = rv_main(["run", "-f", "-g", "1", "-t", "a6000", "--time", "10m", "--wait-timeout", "10m",
                    "--json", "--", script])
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    res = json.loads(out)
    assert len(res["retries"]) == 1, res
    first = res["retries"][0]
    assert first["retry"] and first["evidence"] == "RuntimeError: CUDA error: unknown error"
    assert first["runtime_s"] is not None and first["runtime_s"] < 600
    bad = first["failed_nodes"]
    assert len(bad) == 1
    assert res["state"] == "COMPLETED" and res["winner_nodes"] and bad[0] not in res["winner_nodes"]
    assert res["winner"] != first["job_id"]

    # the marker shows both runs, on different nodes; the second job asked Slurm to avoid the first
    async def facts() -> tuple[str, str]:
        from rv_tui.cluster import open_cluster
        from rv_tui.config import load_config
        from rv_tui.quoting import q

        c = await open_cluster(load_config())
        try:
            m = (await c.exec(f"cat {q(marker)}; rm -f {q(marker)}")).stdout
            sc = (await c.exec(f"scontrol show job {q(res['winner'])} 2>&1 || true")).stdout
            return m, sc
        finally:
            await c.close()

    import asyncio

    lines, scontrol = asyncio.run(facts())
    assert lines.splitlines() == [bad[0], f"ok on {res['winner_nodes'][0]}"]
    if "ExcNodeList" in scontrol:  # still known to slurmctld
        assert f"ExcNodeList={bad[0]}" in scontrol
