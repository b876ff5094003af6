"""rv ssh / rv gpu / rv forward: srun-step builders and parsers (unit), and end to end on the local
Slurm cluster with a real running 2-node job that serves HTTP on both nodes.

The test cluster's nodes are all this host (each with its own hostname), so a step's ``hostname``
proves which node it landed on, and a server "on a node" is reachable on this host too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rv_tui.cluster.base import JobInfo
from rv_tui.errors import RvError
from rv_tui.jobs import access
from rv_tui.quoting import join, q
from rv_tui.slurm import steps

HOSTILE = ["'; rm -rf ~; echo '", "$(id)", "`id`", "a\nb", "n1 n2", "../x"]


# ----------------------------------------------------------------------------- unit

def test_step_argv_selects_the_node_and_quotes() -> None:
    argv = steps.step_argv("123", "udc-an37-2", ["bash", "-c", "echo $(id); `x`"], pty=True)
    assert argv[:7] == ["srun", "--jobid=123", "--overlap", "--nodelist=udc-an37-2", "-N1", "-n1", "--pty"]
    cmd = steps.step_command("123_4", "udc-an37-2", ["bash", "-c", "echo $(id); `x`"])
    assert cmd.endswith(q("echo $(id); `x`")) and "--nodelist=udc-an37-2" in cmd
    assert steps.gpu_command("9", "n1") == "srun --jobid=9 --overlap --nodelist=n1 -N1 -n1 env -u CUDA_VISIBLE_DEVICES nvidia-smi"
    for bad in HOSTILE:
        with pytest.raises(RvError):
            steps.step_command("9", bad, ["true"])
        with pytest.raises(RvError):
            steps.step_command(bad, "n1", ["true"])


SS = """\
LISTEN 0      128        127.0.0.1:8000       0.0.0.0:*
LISTEN 0      4096         0.0.0.0:18000      0.0.0.0:*
LISTEN 0      4096               *:6006             *:*
LISTEN 0      511             [::]:8888          [::]:*
LISTEN 0      511          0.0.0.0:8888       0.0.0.0:*
LISTEN 0      128   0.0.0.0%lo:7861       0.0.0.0:*
"""


def test_parse_listening_is_exact_and_known_services_prefer_routable() -> None:
    socks = steps.parse_listening("State Recv-Q Send-Q Local Address:Port Peer Address:Port\n" + SS)
    assert {(s.address, s.port) for s in socks} == {
        ("127.0.0.1", 8000), ("0.0.0.0", 18000), ("*", 6006), ("::", 8888), ("0.0.0.0", 8888), ("0.0.0.0", 7861)}
    found = access.known_services(socks)
    assert [(p, n) for p, n, _ in found] == [(6006, "tensorboard"), (8000, "vllm"), (8888, "jupyter")]
    vllm = next(s for p, _, s in found if p == 8000)
    assert vllm.loopback_only  # 127.0.0.1 only: the CLI warns
    # 18000 and 7861 are not 8000 / 7860 (the original's `grep :800` matched 18000)
    assert 7860 not in {p for p, _, _ in found}
    assert access.known_services(steps.parse_listening("LISTEN 0 1 0.0.0.0:18000 0.0.0.0:*\n")) == []


def test_program_missing_detection() -> None:
    assert steps.program_missing(127, "", "nvidia-smi")
    assert steps.program_missing(2, "slurmstepd: error: execve(): nvidia-smi: No such file or directory", "nvidia-smi")
    assert not steps.program_missing(1, "NVIDIA-SMI has failed because it couldn't communicate", "nvidia-smi")
    assert not steps.program_missing(0, "", "nvidia-smi")


def job(nodes: tuple[str, ...], state: str = "RUNNING", comment: str | None = None) -> JobInfo:
    return JobInfo(job_id="42", name="j", user="u", state=state, partition="p", nodes=nodes,
                   num_nodes=len(nodes), comment=comment)


def test_pick_node_range_and_group() -> None:
    j = job(("a1", "a2"))
    assert access.pick_node(j, 1).node == "a2"
    with pytest.raises(RvError) as e:
        access.pick_node(j, 2)
    assert "2 nodes (a1, a2)" in e.value.message and "0..1" in (e.value.hint or "")
    with pytest.raises(RvError):
        access.pick_node(j, -1)
    assert access.group_of(job(("a",), comment="rvgroup:abc123")) == "abc123"
    assert access.group_of(job(("a",), comment="something")) is None


def test_forward_port_specs() -> None:
    from rv_tui.cli.forward import parse_ports

    assert parse_ports("8888") == (8888, 8888)
    assert parse_ports("9000:8888") == (9000, 8888)
    assert parse_ports("0:8888") == (0, 8888)
    for bad in ("x", "8888:", "70000", "1:0", "$(id)"):
        with pytest.raises(RvError):
            parse_ports(bad)


def write_config(home: Path, info: dict) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "config.toml"
    cfg.write_text(f"""\
[connection]
host = "{info['host']}"
hostname = "{info['host']}"
user = "{info['user']}"
port = {info['port']}
identity_file = "{info['identity_file']}"
known_hosts = "{info['known_hosts']}"

[paths]
scratch = "{info['scratch']}"

[notifications]
enabled = false

[scratch_keepalive]
enabled = false
""")
    os.chmod(cfg, 0o600)
    return cfg


FAKE = {"host": "login.example", "user": "abc1de", "port": 2200, "identity_file": "/k/id_ed25519",
        "known_hosts": "/k/known_hosts", "scratch": "/scratch/abc1de"}


def test_ssh_argv_and_config_block(tmp_path: Path) -> None:
    from rv_tui.cli.ssh import ssh_argv, ssh_config_block
    from rv_tui.cli.up import ssh_argv as up_ssh_argv
    from rv_tui.config import load_config

    cfg = load_config(write_config(tmp_path, FAKE))
    assert up_ssh_argv is ssh_argv  # one spawner for rv up and rv ssh
    argv = ssh_argv(cfg, "srun x")
    assert argv[:2] == ["ssh", "-t"] and argv[-2:] == ["abc1de@login.example", "srun x"]
    assert "2200" in argv and "/k/id_ed25519" in argv
    block = ssh_config_block(cfg, "udc-an37-2")
    assert "Host rv-compute\n    HostName udc-an37-2\n    User abc1de\n" in block
    assert "ProxyJump rv-login" in block and "Port 2200" in block and "HostName login.example" in block


async def test_demo_cluster_gives_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rv_tui.cluster.demo import DemoCluster

    monkeypatch.setenv("RV_HOME", str(tmp_path))
    c = DemoCluster(seed=3)
    with pytest.raises(RvError) as e:
        await access.running_job(c)
    assert "no running job" in e.value.message
    target = access.NodeTarget(job(("udc-an37-1",)), 0, "udc-an37-1")
    with pytest.raises(RvError, match="demo cluster"):
        await access.forward(c, 0, target, 8888)
    with pytest.raises(RvError, match="demo cluster"):
        await access.node_gpus(c, target)
    await c.close()


def run_cli_sync(*argv: str, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rv_tui.cli.main", *argv], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), input=stdin)


def test_demo_cli_errors_have_no_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RV_HOME", str(tmp_path))
    for argv in (["--demo", "gpu"], ["--demo", "ssh"], ["--demo", "forward", "8888"], ["--demo", "forward"]):
        r = run_cli_sync(*argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert "rv: error:" in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)


# ----------------------------------------------------------------------------- cluster

STATE = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster"))
STANDIN = """#!/bin/sh
# Stand-in nvidia-smi for rv-tui's test cluster (fake GPUs); installed by tests/test_job_access.py.
echo "NVIDIA-SMI stand-in on $(hostname) job=${SLURM_JOB_ID:-none} CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"
"""


def install_standin() -> None:
    """Put ``nvidia-smi`` on rvtest's PATH (the login sshd's PATH, which job steps inherit)."""
    path = STATE / "bin" / "nvidia-smi"
    if path.exists() and path.read_text() == STANDIN:
        return
    tmp = path.with_name(f".nvidia-smi.{os.getpid()}")
    tmp.write_text(STANDIN)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServedJob:
    def __init__(self, job_id: str, nodes: tuple[str, ...], port1: int, known: int, token: str) -> None:
        self.job_id, self.nodes, self.port1, self.known, self.token = job_id, nodes, port1, known, token


@pytest.fixture(scope="module")
def served_job(slurm_cluster, tmp_path_factory) -> Iterator[ServedJob]:
    """A running 2-node job: node 1 serves HTTP on a free port, node 0 on a well-known port."""
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    info = json.loads((STATE / "cluster.json").read_text())
    cfg = load_config(write_config(tmp_path_factory.mktemp("h13home"), info))
    known = next((p for p in sorted(access.KNOWN_SERVICES) if port_free(p)), None)
    assert known is not None, "every well-known port is taken on this host"
    port1 = free_port()
    token = uuid.uuid4().hex
    d = f"{info['scratch']}/.rv/tmp/access-{token[:8]}"
    body = (f'cd {q(d)} && if [ "$SLURM_NODEID" = 1 ]; then exec python3 -m http.server {port1} --bind 0.0.0.0; '
            f'else exec python3 -m http.server {known} --bind 0.0.0.0; fi')
    script = "\n".join([
        "#!/bin/bash", f"#SBATCH --job-name=rvacc-{token[:6]}", "#SBATCH --partition=standard",
        "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --time=00:15:00",
        f"#SBATCH --output={info['scratch']}/.rv/logs/%x-%j.out",
        f"mkdir -p {q(d)} && printf '%s' {q(token)} > {q(d + '/tok.txt')}",
        f"srun bash -c {q(body)}", ""])

    async def submit() -> tuple[str, tuple[str, ...]]:
        c = SshCluster.from_config(cfg)
        await c.connect()
        try:
            await c.write_file(f"{d}/job.sh", script, 0o700)
            await c.exec(f"mkdir -p {q(info['scratch'] + '/.rv/logs')}")
            r = await c.exec(join(["sbatch", "--parsable", f"{d}/job.sh"]))
            assert r.ok, r.stderr
            jid = r.stdout.strip().split(";")[0]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                [j] = await c.jobs([jid])
                if j.state == "RUNNING" and j.nodes and listening(port1) and listening(known):
                    return jid, j.nodes
                assert not j.is_terminal, j
                await asyncio.sleep(0.3)
            raise AssertionError(f"job {jid} did not start serving in time")
        finally:
            await c.close()

    async def cancel(jid: str) -> None:
        c = SshCluster.from_config(cfg)
        await c.connect()
        await c.cancel([jid])
        await c.exec(f"rm -rf {q(d)}")
        await c.close()

    jid, nodes = asyncio.run(submit())
    try:
        yield ServedJob(jid, nodes, port1, known, token)
    finally:
        asyncio.run(cancel(jid))


@pytest.fixture
async def ssh_cluster(rv_home) -> AsyncIterator[object]:
    from rv_tui.cluster.ssh import SshCluster
    from rv_tui.config import load_config

    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - localhost test server
        return r.read().decode()


@pytest.mark.cluster
async def test_step_for_node_index_lands_on_that_node(ssh_cluster, served_job) -> None:
    job = await access.running_job(ssh_cluster, served_job.job_id)
    assert job.nodes == served_job.nodes and len(job.nodes) == 2
    for i in (0, 1):
        t = access.pick_node(job, i)
        r = await ssh_cluster.exec(steps.step_command(job.job_id, t.node, ["hostname"]))
        assert r.ok, r.stderr
        assert r.stdout.strip() == job.nodes[i]


@pytest.mark.cluster
def test_rv_gpu_shows_each_node(rv_home, served_job) -> None:
    install_standin()
    r = run_cli_sync("gpu", served_job.job_id)
    assert r.returncode == 0, r.stderr
    n0, n1 = served_job.nodes
    assert f"--- node 0: {n0} ---" in r.stdout and f"--- node 1: {n1} ---" in r.stdout
    for n in (n0, n1):
        assert f"NVIDIA-SMI stand-in on {n} job={served_job.job_id} CUDA_VISIBLE_DEVICES=unset" in r.stdout
    r = run_cli_sync("gpu", served_job.job_id, "--node", "1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [(x["node"], x["node_name"], x["ok"]) for x in doc["nodes"]] == [(1, n1, True)]
    assert f"stand-in on {n1}" in doc["nodes"][0]["output"]


@pytest.mark.cluster
async def test_gpu_program_missing_is_a_clear_message(ssh_cluster, served_job) -> None:
    job = await access.running_job(ssh_cluster, served_job.job_id)
    [res] = await access.job_gpus(ssh_cluster, [access.pick_node(job, 1)], program="rv-no-such-nvidia-smi")
    assert not res.ok and res.error == (f"rv-no-such-nvidia-smi was not found on {job.nodes[1]} "
                                         "(no NVIDIA driver there, or not on PATH)")


@pytest.mark.cluster
def test_bad_inputs_are_clear_errors(rv_home, served_job) -> None:
    cases = [
        (["gpu", served_job.job_id, "--node", "2"], "out of range"),
        (["gpu", "999999999"], "not found"),
        (["forward", "8888", served_job.job_id, "--node", "5"], "out of range"),
        # the node's server holds port1 on this host, so listening on it locally must fail
        (["forward", f"{served_job.port1}:{served_job.port1}", served_job.job_id, "--node", "1"], "cannot listen"),
        (["ssh", served_job.job_id, "--node", "9", "--print"], "out of range"),
    ]
    for argv, needle in cases:
        r = run_cli_sync(*argv)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)


@pytest.mark.cluster
async def test_pending_job_is_not_running(ssh_cluster) -> None:
    r = await ssh_cluster.exec("sbatch --parsable --hold -p standard -t 1 -J rvacc-held --wrap 'true'")
    assert r.ok, r.stderr
    jid = r.stdout.strip().split(";")[0]
    try:
        with pytest.raises(RvError) as e:
            await access.running_job(ssh_cluster, jid)
        assert e.value.message.startswith(f"job {jid} is PENDING") and "not running" in e.value.message
    finally:
        await ssh_cluster.cancel([jid])


@pytest.mark.cluster
async def test_forward_core_reaches_server_with_different_local_port(ssh_cluster, served_job) -> None:
    job = await access.running_job(ssh_cluster, served_job.job_id)
    lst = await access.forward(ssh_cluster, 0, access.pick_node(job, 1), served_job.port1)
    try:
        local = lst.get_port()
        assert local != served_job.port1
        body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{local}/tok.txt")
        assert body == served_job.token
    finally:
        lst.close()
    assert any(r.kind == "forward" and f"-> {job.nodes[1]}:{served_job.port1}" in r.command
               for r in ssh_cluster.pool.command_log)


async def start_cli(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rv_tui.cli.main", *argv, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ))


async def read_urls(proc: asyncio.subprocess.Process, want: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < want:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
        if not line:
            err = await proc.stderr.read()  # type: ignore[union-attr]
            raise AssertionError(f"rv forward ended early: {err.decode()}")
        if line.startswith(b"http://"):
            lines.append(line.decode().strip())
    return lines


async def read_until(proc: asyncio.subprocess.Process, needle: str) -> str:
    """The first stdout line containing ``needle`` (other well-known services may come first)."""
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
        if not line:
            err = await proc.stderr.read()  # type: ignore[union-attr]
            raise AssertionError(f"rv forward ended early: {err.decode()}")
        if needle in line.decode() + " ":
            return line.decode().strip()


async def stop(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return err.decode()


@pytest.mark.cluster
async def test_rv_forward_cli_local_to_remote_port(rv_home, served_job) -> None:
    local = free_port()
    proc = await start_cli("forward", f"{local}:{served_job.port1}", served_job.job_id, "--node", "1")
    try:
        [line] = await read_urls(proc, 1)
        assert line.startswith(f"http://localhost:{local} -> {served_job.nodes[1]}:{served_job.port1}")
        assert await asyncio.to_thread(fetch, f"http://127.0.0.1:{local}/tok.txt") == served_job.token
    finally:
        err = await stop(proc)
    assert "Traceback" not in err


@pytest.mark.cluster
async def test_rv_forward_auto_finds_the_known_port(rv_home, served_job) -> None:
    r = await asyncio.to_thread(run_cli_sync, "forward", "--list", served_job.job_id, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["listening"]
    assert {"address": "0.0.0.0", "port": served_job.known, "service": access.KNOWN_SERVICES[served_job.known],
            "loopback_only": False} in rows
    proc = await start_cli("forward", "--auto", served_job.job_id)
    try:
        # the job's server holds the well-known port on this host, so --auto picks a free local port
        mine = await read_until(proc, f" -> {served_job.nodes[0]}:{served_job.known} ")
        local = int(mine.split()[0].rsplit(":", 1)[1])
        assert local != served_job.known
        assert await asyncio.to_thread(fetch, f"http://127.0.0.1:{local}/tok.txt") == served_job.token
    finally:
        err = await stop(proc)
    assert f"local port {served_job.known} is busy" in err and "Traceback" not in err


@pytest.mark.cluster
def test_rv_ssh_print_targets_the_node(rv_home, served_job) -> None:
    r = run_cli_sync("ssh", served_job.job_id, "--node", "1", "--print", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["node"] == served_job.nodes[1]
    remote = doc["argv"][-1]
    assert remote.startswith(f"srun --jobid={served_job.job_id} --overlap --pty -N1 -n1 --nodelist={served_job.nodes[1]} ")
    assert doc["argv"][:2] == ["ssh", "-t"]


@pytest.mark.cluster
def test_rv_ssh_shell_lands_on_node_1(rv_home, served_job) -> None:
    """A real pty (script(1)) runs `rv ssh --node 1`; the shell reports its hostname and exits."""
    cmd = join([sys.executable, "-m", "rv_tui.cli.main", "ssh", served_job.job_id, "--node", "1"])
    r = subprocess.run(["script", "-q", "-e", "-c", cmd, "/dev/null"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ),
                       input='echo "RVNODE=$(hostname)-$SLURM_JOB_ID"; exit 7\n')
    assert f"RVNODE={served_job.nodes[1]}-{served_job.job_id}" in r.stdout, (r.stdout, r.stderr)
    assert r.returncode == 7, (r.returncode, r.stdout, r.stderr)
