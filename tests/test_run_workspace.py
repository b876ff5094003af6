"""``rv run`` with the workspace: the project is synced, the job runs in its snapshot, the
arguments arrive intact, the exit code is the job's; ``--dry-run`` sends and submits nothing;
the same launch assembly (``prepare_launch``) on the demo; the daily keepalive hook.

Cluster tests never use ``clean_queue`` (other sessions share the cluster): each cancels only
the jobs its own groups submitted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest

from rv_tui.allocator.model import Request
from rv_tui.cli.main import main

TRAIN = """\
import os, sys
print("cwd", os.getcwd())
print("args", sys.argv[1:])
print("group", os.environ.get("RV_GROUP_ID"))
code = int(sys.argv[sys.argv.index("--exit") + 1]) if "--exit" in sys.argv else 0
if code:
    print("failing on purpose", file=sys.stderr)
sys.exit(code)
"""


def make_repo(path: Path, *, sub: str | None = None) -> Path:
    """A git repo (no remote) with train.py and no dependency file."""
    path.mkdir(parents=True)
    target = path / sub if sub else path
    target.mkdir(parents=True, exist_ok=True)
    (target / "train.py").write_text(TRAIN)
    (path / "README.md").write_text("tiny\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-qm", "init"], check=True, env=env)
    return path


def rv(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def groups(home: Path) -> list[dict]:
    d = home / "groups"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.exists() else []


# ----------------------------------------------------------------------------- demo (no cluster)

@pytest.fixture
def demo_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RV_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


async def test_prepare_launch_keeps_the_command_and_points_every_sibling_at_the_snapshot(tmp_path, demo_home):
    """From a sub-directory, ``python3 train.py`` stays ``python3 train.py`` and runs in the same
    sub-directory of the job's snapshot; every race entry's script cds there and records itself."""
    from rv_tui.cluster.demo import DemoCluster
    from rv_tui.jobs.launch import prepare_launch

    repo = make_repo(tmp_path / "proj", sub="src")
    cluster = DemoCluster(seed=3)
    try:
        launch = await prepare_launch(cluster, None, Request(gpus=1, gpu_type="a6000"), "python3 train.py --flag 'a b'",
                                      cwd=repo / "src", name="wsjob")
    finally:
        await cluster.close()
    ws = launch.workspace
    assert ws is not None and ws.project is not None
    assert ws.entry == "src/train.py"
    assert launch.request.command == "python3 train.py --flag 'a b'"
    assert re.fullmatch(rf"{cluster.scratch}/rv-workspaces/{ws.project.name}/main/snapshots/wsjob-\d+", ws.snapshot)
    assert launch.context.work_dir == f"{ws.snapshot}/src" and launch.context.name == "wsjob"
    assert launch.entries, "the plan had strategies"
    for e in launch.entries:
        assert f"cd -- {ws.snapshot}/src" in e.submission.script
        assert f"{ws.snapshot}/.rv-jobs" in e.submission.script
        assert e.submission.command == launch.request.command
        assert e.submission.group_id == launch.group_id


async def test_no_sync_runs_the_command_as_given(tmp_path, demo_home):
    from rv_tui.cluster.demo import DemoCluster
    from rv_tui.jobs.launch import prepare_launch

    repo = make_repo(tmp_path / "proj")
    cluster = DemoCluster(seed=3)
    try:
        launch = await prepare_launch(cluster, None, Request(gpus=1), "python3 train.py", cwd=repo, workspace=False)
    finally:
        await cluster.close()
    assert launch.workspace is None and launch.context.work_dir is None
    assert "cd -- " not in launch.entries[0].submission.script


def test_demo_run_follow_without_git_remote(capsys, tmp_path, demo_home, monkeypatch):
    """``rv --demo run -f`` in a repo without a remote: exits 0, single-node lines unprefixed."""
    repo = make_repo(tmp_path / "proj")
    monkeypatch.chdir(repo)
    code, out, err = rv(capsys, "--demo", "--seed", "3", "--speed", "600", "run", "-f", "-g", "1", "-t", "a6000",
                        "--", "python", "train.py", "--flag", "a b")
    assert code == 0, err
    assert "[rv] command: python train.py --flag 'a b'" in out
    assert "[node0]" not in out and "[batch]" not in out
    assert "finished: COMPLETED (exit 0)" in err
    (rec,) = groups(demo_home)
    assert rec["command"] == "python train.py --flag 'a b'"


def test_demo_dry_run_shows_sync_plan_and_submits_nothing(capsys, tmp_path, demo_home, monkeypatch):
    repo = make_repo(tmp_path / "proj")
    monkeypatch.chdir(repo)
    code, out, err = rv(capsys, "--demo", "--seed", "3", "run", "--dry-run", "-g", "1", "-t", "a6000",
                        "--", "python", "train.py")
    assert code == 0, err
    assert "strategies" in out and "  + train.py" in out and "  + README.md" in out
    assert re.search(r"would sync .* 2 to upload", out)
    assert "nothing was uploaded or submitted" in out
    assert groups(demo_home) == []
    code, out, err = rv(capsys, "--demo", "--seed", "3", "run", "--dry-run", "--json", "-g", "1", "-t", "a6000",
                        "--", "python", "train.py")
    assert code == 0, err
    d = json.loads(out)
    assert d["strategies"] and d["launch"]["group_id"] is None
    assert sorted(d["launch"]["workspace"]["sync"]["upload"]) == ["README.md", "train.py"]


async def test_settle_keepalive_waits_briefly_then_cancels():
    from rv_tui.cli.common import settle_keepalive

    quick = asyncio.get_running_loop().create_task(asyncio.sleep(0))
    await settle_keepalive(quick, grace=5)
    assert quick.done() and not quick.cancelled()
    stuck = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    await settle_keepalive(stuck, grace=0.01)
    assert stuck.cancelled()
    await settle_keepalive(None)


async def test_no_keepalive_on_the_demo(demo_home):
    from rv_tui.cli.common import cluster_from_args
    from rv_tui.workspace.keepalive import stamp_path

    args = argparse.Namespace(demo=True, seed=1, speed=None)
    async with cluster_from_args(args) as cluster:
        assert cluster.is_demo
    assert not stamp_path().exists()


# ----------------------------------------------------------------------------- real cluster

def remote(capsys, *argv: str) -> str:
    code, out, err = rv(capsys, "exec", *argv)
    assert code == 0, err
    return out


@pytest.mark.cluster
def test_run_follow_syncs_and_runs_in_the_snapshot(capsys, tmp_path, rv_home, own_jobs, slurm_cluster, monkeypatch):
    repo = make_repo(tmp_path / "My Proj")
    monkeypatch.chdir(repo)
    code, out, err = rv(capsys, "run", "-f", "-g", "1", "-t", "a6000", "--time", "10m", "--",
                        "python3", "train.py", "--flag", "a b")
    assert code == 0, (out, err)
    assert "rv: syncing" in err and "2 to upload" in err
    cwd = re.search(r"^cwd (.+)$", out, re.M)
    assert cwd, out
    from rv_tui.workspace.project import detect_project

    project = detect_project(repo).name
    assert re.fullmatch(rf"{slurm_cluster.scratch}/rv-workspaces/{re.escape(project)}/main/snapshots/rv-train-\d+",
                        cwd.group(1)), cwd.group(1)
    assert "args ['--flag', 'a b']" in out
    (rec,) = groups(rv_home)
    assert f"group {rec['id']}" in out  # RV_GROUP_ID reached the job
    assert rec["command"] == "python3 train.py --flag 'a b'"
    assert not re.search(r"^\[node\d\]", out, re.M)  # single node: no node prefixes
    assert "finished: COMPLETED (exit 0)" in err
    # the snapshot knows its jobs (rv recorded the submitted ids; the job added its own)
    ids = set(remote(capsys, "cat", f"{cwd.group(1)}/.rv-jobs").split())
    assert rec["winner"] in ids
    # code/ holds exactly the tracked files
    code_dir = cwd.group(1).rsplit("/snapshots/", 1)[0] + "/code"
    assert sorted(remote(capsys, "ls", "-A", code_dir).split()) == ["README.md", "train.py"]

    # a failing script: the job's own exit code, stderr marked; nothing new to upload
    code, out, err = rv(capsys, "run", "-f", "-g", "1", "-t", "a6000", "--time", "10m", "--",
                        "python3", "train.py", "--exit", "5")
    assert code == 5, (out, err)
    assert "[stderr] failing on purpose" in out
    assert "0 to upload" in err
    assert "finished: FAILED (exit 5)" in err
    remote(capsys, "rm", "-rf", "--", code_dir.rsplit("/", 2)[0])  # this test's project workspace


@pytest.mark.cluster
def test_run_dry_run_uploads_and_submits_nothing(capsys, tmp_path, rv_home, own_jobs, slurm_cluster, monkeypatch):
    repo = make_repo(tmp_path / "dryproj")
    monkeypatch.chdir(repo)
    name = f"dry{tmp_path.name[-8:]}".replace("_", "")
    code, out, err = rv(capsys, "run", "--dry-run", "--json", "--name", name, "-g", "1", "-t", "a6000", "--",
                        "python3", "train.py")
    assert code == 0, err
    d = json.loads(out)
    ws = d["launch"]["workspace"]
    assert sorted(ws["sync"]["upload"]) == ["README.md", "train.py"]
    assert ws["snapshot"].startswith(ws["code_dir"].rsplit("/code", 1)[0] + "/snapshots/")
    assert groups(rv_home) == []
    # nothing on the cluster: no job by that name, no workspace directory
    assert remote(capsys, "squeue", "-h", "-u", slurm_cluster.user, "-n", name, "-o", "%i").strip() == ""
    assert remote(capsys, "sh", "-c", f"test -e '{ws['code_dir']}' && echo yes || echo no").strip() == "no"


@pytest.mark.cluster
async def test_keepalive_fires_once_a_day_and_is_settled_before_close(rv_home):
    """With keepalive enabled the first command sends the detached touch (seen in the command
    log before the connection closed) and writes the stamp; the next command does not."""
    from rv_tui.cli.common import cluster_from_args
    from rv_tui.workspace.keepalive import stamp_path

    cfg = rv_home / "config.toml"
    cfg.write_text(cfg.read_text().replace("[scratch_keepalive]\nenabled = false", "[scratch_keepalive]\nenabled = true"))

    def keepalives(cluster) -> list[str]:  # type: ignore[no-untyped-def]
        return [r.command for r in cluster.pool.command_log.records() if "touch -a" in r.command]

    args = argparse.Namespace(demo=False, seed=None, speed=None)
    async with cluster_from_args(args) as cluster:
        assert (await cluster.exec("true")).ok
    sent = keepalives(cluster)
    assert len(sent) == 1 and sent[0].startswith("nohup ")
    assert stamp_path().exists()
    stamp = stamp_path().read_text()
    async with cluster_from_args(argparse.Namespace(demo=False, seed=None, speed=None)) as cluster2:
        assert (await cluster2.exec("true")).ok
    assert keepalives(cluster2) == [] and stamp_path().read_text() == stamp
