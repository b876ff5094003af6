"""``rv ssh [JOB] [--node N] [--config]``: an interactive shell on one node of a running job.

The shell is an ``srun --jobid --overlap --nodelist=<node> --pty`` step (so it lives inside the
job's cgroup and sees its GPUs) with rv's env and venv, run under the system ``ssh -t`` with
exactly the connection settings of rv's own asyncssh pool.  Fixes the original, whose ``--node``
only changed the message: the shell always landed on the first node.  ``--config`` prints an
``ssh_config`` block that reaches the compute node through the login node (ProxyJump).

This module also holds the one "spawn ``ssh -t`` with the pool's target" helper that ``rv up``
uses to attach.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys

from rv_tui.cli.common import cluster_from_args, err, load, print_json
from rv_tui.config import Config
from rv_tui.errors import RvError
from rv_tui.jobs.access import pick_node, running_job, shell_command
from rv_tui.jobs.attach import ssh_argv  # noqa: F401 - the core builds the argv; re-exported


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ssh", help="open a shell on a node of a running job",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", nargs="?", help="job id (default: your newest running job)")
    p.add_argument("--node", type=int, default=0, metavar="N", help="node index in the job (default 0)")
    p.add_argument("--config", action="store_true",
                   help="print an ssh_config block for the node (ProxyJump via the login node)")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the ssh command instead of running it")
    p.add_argument("--json", action="store_true", help="machine-readable output (with --config/--print)")
    p.set_defaults(func=main)


async def run_ssh_tty(config: Config | None, remote_command: str, *, what: str = "rv ssh",
                      fallback_hint: str | None = None) -> int:
    """Run ``remote_command`` under the system ``ssh -t`` with this terminal passed through;
    returns ssh's exit status (the remote shell's)."""
    if not sys.stdin.isatty():
        raise RvError(f"{what} needs an interactive terminal for the shell", hint=fallback_hint)
    if shutil.which("ssh") is None:
        raise RvError("the OpenSSH client `ssh` is needed for an interactive shell", hint="install openssh-client")
    argv = ssh_argv(config, remote_command)
    proc = await asyncio.create_subprocess_exec(*argv, env=os.environ.copy())
    try:
        return await proc.wait()
    except asyncio.CancelledError:
        proc.terminate()
        raise


def ssh_config_block(config: Config | None, node: str, *, login_alias: str = "rv-login",
                     node_alias: str = "rv-compute") -> str:
    """An ``ssh_config`` snippet: the login node as rv reaches it, and the compute node through it.

    Compute nodes usually accept SSH only while you have a job on them (pam_slurm_adopt)."""
    if config is None or config.connection is None:
        raise RvError("no cluster configured", hint="run `rv init`")
    from rv_tui.remote.target import SshTarget

    t = SshTarget.from_config(config.connection)
    lines = [f"Host {login_alias}", f"    HostName {t.host}"]
    if t.user:
        lines.append(f"    User {t.user}")
    if t.port != 22:
        lines.append(f"    Port {t.port}")
    lines += [f"    IdentityFile {i}" for i in t.identity_files]
    lines.append(f"    UserKnownHostsFile {t.known_hosts_path}")
    if t.proxy_jump:
        lines.append(f"    ProxyJump {t.proxy_jump}")
    lines += ["", f"Host {node_alias}", f"    HostName {node}"]
    if t.user:
        lines.append(f"    User {t.user}")
    lines += [f"    IdentityFile {i}" for i in t.identity_files]
    lines.append(f"    ProxyJump {login_alias}")
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    config = load(args)
    async with cluster_from_args(args) as cluster:
        job = await running_job(cluster, args.job)
        target = pick_node(job, args.node)
        if args.config:
            if cluster.is_demo:
                raise RvError("rv ssh --config is not available on the demo cluster (its nodes are simulated)")
            block = ssh_config_block(config, target.node)
            if args.json:
                print_json({"job_id": job.job_id, "node_index": target.index, "node": target.node,
                            "ssh_config": block})
            else:
                print(f"# job {job.job_id}, node {target.index}: {target.node}  (add to ~/.ssh/config)")
                print(block, end="")
            return 0
        if cluster.is_demo:
            raise RvError("rv ssh is not available on the demo cluster (its nodes are simulated)")
        remote = await shell_command(cluster, target)
        argv = ssh_argv(config, remote)
        if args.print_only:
            if args.json:
                print_json({"job_id": job.job_id, "node_index": target.index, "node": target.node, "argv": argv})
            else:
                from rv_tui.quoting import join

                print(join(argv))
            return 0
    # the pool is closed before the shell starts: an idle connection must not hold the session
    err(f"rv: shell on {target.node} (node {target.index} of job {job.job_id}); exit to leave (the job keeps running)")
    return await run_ssh_tty(config, remote, what="rv ssh",
                             fallback_hint="use `rv ssh --print` to get the command")
