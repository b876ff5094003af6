"""Reaching into a running job: pick its node, open a shell there, read its GPUs, find and forward
its ports.

Why in the core: ``rv ssh``, ``rv gpu`` and ``rv forward`` (and later the TUI) share "which running
job, which node" and the ``srun --overlap`` steps of :mod:`rv_tui.slurm.steps`; faces only render.
Everything goes through the :class:`~rv_tui.cluster.base.Cluster` interface; port forwarding is an
optional capability (``forward_port``) that only a cluster with a real SSH connection has.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from rv_tui.cluster.base import Cluster, JobInfo
from rv_tui.errors import RvError
from rv_tui.paths import RemotePaths
from rv_tui.quoting import join, q
from rv_tui.slurm import steps

#: Well-known services ``rv forward --auto`` looks for, port -> name.
KNOWN_SERVICES: dict[int, str] = {
    8888: "jupyter", 6006: "tensorboard", 8265: "ray", 8000: "vllm", 7860: "gradio",
}
#: Group id used for the attach rcfile of jobs that rv did not start (no ``rvgroup:`` comment).
FOREIGN_GROUP = "rv-ssh"
STEP_TIMEOUT_S = 60.0


class PortListener(Protocol):
    """What ``Cluster.forward_port`` returns (an asyncssh listener satisfies it)."""

    def get_port(self) -> int: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@dataclass(frozen=True)
class NodeTarget:
    """One node of a running job, by index (0 = the job's first node)."""

    job: JobInfo
    index: int
    node: str


async def running_job(cluster: Cluster, job_id: str | None = None) -> JobInfo:
    """The job to reach: ``job_id``, or the newest running job (``rv_tui.logs``' resolver).

    Raises a clear RvError when it is not running (pending, finished, unknown)."""
    from rv_tui.logs.follow import latest_job_id

    explicit = job_id is not None
    if job_id is None:
        try:
            job_id = await latest_job_id(cluster)
        except RvError:
            raise RvError("you have no running job", hint="start one with `rv up` or `rv run`") from None
    found = [j for j in await cluster.jobs([job_id]) if j.job_id == job_id]
    if not found:
        raise RvError(f"job {job_id} not found", hint="see your jobs with `rv ps`")
    job = found[0]
    if job.state != "RUNNING" or not job.nodes:
        what = f"job {job_id} is {job.state}" + (f" ({job.reason})" if job.reason and job.state == "PENDING" else "")
        if explicit:
            raise RvError(f"{what}, not running", hint="wait until it runs (`rv ps`) or pick another job")
        raise RvError(f"you have no running job (your newest: {what})",
                      hint="wait until it runs (`rv ps`) or start one with `rv up`")
    return job


def pick_node(job: JobInfo, index: int) -> NodeTarget:
    """Node ``index`` of the job, or an error naming the valid range."""
    n = len(job.nodes)
    if not 0 <= index < n:
        raise RvError(f"job {job.job_id} has {n} node{'s' if n != 1 else ''} ({', '.join(job.nodes)}); "
                      f"--node {index} is out of range", hint=f"use --node 0..{n - 1}")
    return NodeTarget(job, index, job.nodes[index])


def all_nodes(job: JobInfo) -> list[NodeTarget]:
    return [NodeTarget(job, i, n) for i, n in enumerate(job.nodes)]


# ----------------------------------------------------------------------------- shell

def group_of(job: JobInfo) -> str | None:
    """The race group rv recorded in the job's ``--comment`` (None for jobs rv did not start)."""
    from rv_tui.jobs.templates import GROUP_COMMENT_PREFIX

    c = (job.comment or "").strip()
    return c[len(GROUP_COMMENT_PREFIX):] if c.startswith(GROUP_COMMENT_PREFIX) else None


def fallback_rc(scratch: str) -> str:
    """rcfile for jobs that did not write one (``rv run`` jobs, foreign jobs): the user's bashrc
    and their ``rv env`` values."""
    env_file = RemotePaths(scratch).env_file
    return ("[ -f ~/.bashrc ] && . ~/.bashrc\n"
            f"if [ -f {q(env_file)} ]; then . {q(env_file)}; fi\n")


async def shell_command(cluster: Cluster, target: NodeTarget) -> str:
    """The remote command (for ``ssh -t``) that opens an interactive shell on ``target.node``
    inside the job, with rv's env and venv: the rcfile an ``rv up`` hold wrote, else a small
    one written now (0600) so the shell still gets the ``rv env`` values without waiting."""
    from rv_tui.jobs.templates import JobContext, attach_command, attach_rc_path

    group = group_of(target.job) or FOREIGN_GROUP
    ctx = JobContext(name="rv-ssh", command=None, scratch=cluster.scratch, group_id=group)
    rc = attach_rc_path(ctx, target.job.job_id)
    probe = await cluster.exec(f"test -r {q(rc)}", timeout=STEP_TIMEOUT_S)
    if not probe.ok:
        await cluster.write_file(rc, fallback_rc(cluster.scratch), 0o600)
    return join(attach_command(target.job.job_id, ctx, node=target.node))


# ----------------------------------------------------------------------------- gpu

@dataclass(frozen=True)
class NodeGpus:
    index: int
    node: str
    ok: bool
    output: str  # nvidia-smi's own output (stdout), or the error we show
    error: str | None = None


async def node_gpus(cluster: Cluster, target: NodeTarget, program: str = "nvidia-smi") -> NodeGpus:
    """``nvidia-smi`` on one node of the job, all its GPUs visible."""
    if cluster.is_demo:
        raise RvError("rv gpu is not available on the demo cluster (its nodes are simulated)")
    res = await cluster.exec(steps.gpu_command(target.job.job_id, target.node, program), timeout=STEP_TIMEOUT_S)
    if res.ok:
        return NodeGpus(target.index, target.node, True, res.stdout)
    if steps.program_missing(res.exit_status, res.stderr, program):
        msg = f"{program} was not found on {target.node} (no NVIDIA driver there, or not on PATH)"
    else:
        tail = "\n".join(res.stderr.strip().splitlines()[-3:]) or f"exit {res.exit_status}"
        msg = f"{program} failed on {target.node}: {tail}"
    return NodeGpus(target.index, target.node, False, res.stdout, msg)


async def job_gpus(cluster: Cluster, targets: list[NodeTarget], program: str = "nvidia-smi") -> list[NodeGpus]:
    """:func:`node_gpus` for every target at once (one step per node, concurrently)."""
    return list(await asyncio.gather(*(node_gpus(cluster, t, program) for t in targets)))


# ----------------------------------------------------------------------------- ports

async def listening_ports(cluster: Cluster, target: NodeTarget) -> list[steps.ListenSocket]:
    """Listening TCP sockets on the job's node (exact ports, from ``ss -Htln`` in a job step)."""
    if cluster.is_demo:
        raise RvError("port detection is not available on the demo cluster (its nodes are simulated)")
    res = await cluster.exec(steps.listening_command(target.job.job_id, target.node), timeout=STEP_TIMEOUT_S)
    if not res.ok:
        if steps.program_missing(res.exit_status, res.stderr, "ss"):
            raise RvError(f"`ss` is not available on {target.node}; cannot detect ports",
                          hint="name the port: rv forward PORT")
        tail = "\n".join(res.stderr.strip().splitlines()[-3:]) or f"exit {res.exit_status}"
        raise RvError(f"could not list ports on {target.node}: {tail}")
    return steps.parse_listening(res.stdout)


def known_services(sockets: list[steps.ListenSocket],
                   known: dict[int, str] | None = None) -> list[tuple[int, str, steps.ListenSocket]]:
    """The well-known services among ``sockets`` (exact port match), one entry per port."""
    known = KNOWN_SERVICES if known is None else known
    out: dict[int, tuple[int, str, steps.ListenSocket]] = {}
    for s in sockets:
        if s.port in known and (s.port not in out or out[s.port][2].loopback_only):
            out[s.port] = (s.port, known[s.port], s)
    return sorted(out.values())


async def forward(cluster: Cluster, local_port: int, target: NodeTarget, remote_port: int) -> PortListener:
    """Listen on ``127.0.0.1:local_port`` and carry each connection to ``node:remote_port``
    through the cluster's SSH connection (local and remote ports may differ)."""
    if not 0 <= local_port <= 65535 or not 1 <= remote_port <= 65535:
        raise RvError(f"not a TCP port: {local_port if not 0 <= local_port <= 65535 else remote_port}")
    fwd: Any = getattr(cluster, "forward_port", None)
    if fwd is None:
        raise RvError(f"port forwarding is not available on {cluster.name}")
    return await fwd(local_port, target.node, remote_port)


__all__ = [
    "FOREIGN_GROUP", "KNOWN_SERVICES", "NodeGpus", "NodeTarget", "PortListener", "all_nodes",
    "fallback_rc", "forward", "group_of", "job_gpus", "known_services", "listening_ports",
    "node_gpus", "pick_node", "running_job", "shell_command",
]
