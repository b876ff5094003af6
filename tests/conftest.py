"""Shared pytest fixtures: the local Slurm test cluster (tests/cluster/) and an RV_HOME for it.

Why: end-to-end tests run against a real Slurm cluster on this host. Under CI=true a cluster
that fails to start fails the run (never a silent skip); elsewhere cluster tests skip with the
reason. The cluster is started once per session and kept running across the whole run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

CLUSTER_DIR = Path(__file__).resolve().parent / "cluster"
STATE_DIR = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster"))
# Commands connect directly in the suite: a background rv agent per test RV_HOME would outlive
# the test. tests/test_agent*.py turn it on (and stop what they start).
os.environ.setdefault("RV_NO_AGENT", "1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the local Slurm test cluster (tests/cluster/)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_load = _load_module("rv_test_cluster_load", CLUSTER_DIR / "load.py")
ClusterLoad = _load.ClusterLoad


@dataclass(frozen=True)
class ClusterInfo:
    """Where the local test cluster's login node is and how to reach it (from cluster.json)."""

    host: str
    port: int
    user: str
    identity_file: str
    known_hosts: str
    scratch: str
    other_user: str
    slurm_conf: str
    state_dir: str


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _cluster_running() -> bool:
    """Any daemon of the cluster up (a fault test may have one down on purpose right now)."""
    r = subprocess.run([sys.executable, str(CLUSTER_DIR / "cluster.py"), "any"],
                       capture_output=True, text=True)
    return r.returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[ClusterInfo]:
    """Start (or reuse) the local Slurm cluster for the whole session; stop it at the end only if
    this session started it (and RV_KEEP_CLUSTER is not 1)."""

    def fail(reason: str) -> None:
        if _in_ci():
            pytest.fail(f"local Slurm test cluster unavailable under CI: {reason}", pytrace=False)
        pytest.skip(f"local Slurm test cluster unavailable: {reason}")

    if os.geteuid() != 0:
        fail("tests/cluster/start.sh needs root (it runs slurmd/sshd and creates users)")
    was_running = _cluster_running()
    try:
        r = subprocess.run(["bash", str(CLUSTER_DIR / "start.sh")], capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        fail(f"start.sh did not run: {e}")
        raise  # unreachable
    if r.returncode != 0:
        fail(f"start.sh exited {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}")
    try:
        data = json.loads((STATE_DIR / "cluster.json").read_text())
        info = ClusterInfo(**{k: data[k] for k in ClusterInfo.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"bad {STATE_DIR / 'cluster.json'}: {e}\n{r.stdout}\n{r.stderr}")
        raise
    # Sessions using the shared cluster register here: the one that started it stops it only
    # when no other session is still running (else their tests lose the cluster mid-run).
    sessions = STATE_DIR / "sessions"
    sessions.mkdir(exist_ok=True)
    mine = sessions / str(os.getpid())
    mine.touch()
    yield info
    mine.unlink(missing_ok=True)
    others = [p for p in sessions.iterdir() if p.name.isdigit() and Path(f"/proc/{p.name}").exists()]
    if not was_running and not others and os.environ.get("RV_KEEP_CLUSTER") != "1":
        subprocess.run([sys.executable, str(CLUSTER_DIR / "cluster.py"), "stop"],
                       capture_output=True, text=True)


@pytest.fixture
def rv_home(tmp_path: Path, slurm_cluster: ClusterInfo, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp RV_HOME (env var set) whose config.toml (0600) points at the local cluster."""
    home = tmp_path / "rv-home"
    home.mkdir()
    c = slurm_cluster
    text = f"""\
[connection]
host = "{c.host}"
hostname = "{c.host}"
user = "{c.user}"
port = {c.port}
identity_file = "{c.identity_file}"
known_hosts = "{c.known_hosts}"

[defaults]
account = "{c.user}"
gpu_type = "any"
time = "2:59:00"

[paths]
scratch = "{c.scratch}"
home = "/home/{c.user}"

[notifications]
enabled = false

[scratch_keepalive]
enabled = false
"""
    cfg = home / "config.toml"
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(cfg, 0o600)
    monkeypatch.setenv("RV_HOME", str(home))
    return home


@pytest.fixture
def cluster_load(slurm_cluster: ClusterInfo) -> Iterator["ClusterLoad"]:
    """The background-load helper (jobs as rvother); cancels all rvother jobs afterwards."""
    load = ClusterLoad(slurm_conf=slurm_cluster.slurm_conf, other_user=slurm_cluster.other_user,
                       user=slurm_cluster.user)
    yield load
    load.clear()


@pytest.fixture
def clean_queue(slurm_cluster: ClusterInfo) -> Iterator[None]:
    """Cancel all rvtest and rvother jobs before and after the test (waits until they are gone)."""
    load = ClusterLoad(slurm_conf=slurm_cluster.slurm_conf, other_user=slurm_cluster.other_user,
                       user=slurm_cluster.user)
    users = (slurm_cluster.user, slurm_cluster.other_user)
    load.clear(users=users)
    yield
    load.clear(users=users)


@pytest.fixture
def own_jobs(rv_home: Path) -> Iterator[None]:
    """Cancel, after the test, only the jobs its race groups submitted (found in RV_HOME/groups).

    Unlike ``clean_queue`` this never touches other sessions' jobs on the shared cluster.
    """
    yield
    import asyncio

    ids = [j["job_id"] for p in (rv_home / "groups").glob("*.json")
           for j in json.loads(p.read_text()).get("jobs", []) if j.get("job_id")]
    if not ids:
        return

    async def cancel() -> None:
        from rv_tui.cluster import open_cluster
        from rv_tui.config import load_config

        cluster = await open_cluster(load_config())
        try:
            await cluster.cancel(ids)
        finally:
            await cluster.close()

    asyncio.run(cancel())
