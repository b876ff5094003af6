"""The race commands end to end through the real CLI (demo cluster, and the real cluster for
``rv run -f`` exit codes): rv run, rv ps, rv stop, rv exec, rv up --no-attach/--dry-run."""
from __future__ import annotations

import json
import uuid

import pytest

from rv_tui.cli.main import main
from rv_tui.cli.run import exit_code_of, split_command
from rv_tui.cluster.base import JobInfo


def rv(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def demo_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RV_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # not a project: rv run must not sync the checkout the tests run in
    return tmp_path / "home"


@pytest.fixture
def outside_project(tmp_path, monkeypatch):
    work = tmp_path / "not-a-project"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_split_command_and_misplaced_flags():
    assert split_command(["--", "python", "t.py", "--lr", "3"]) == ("python t.py --lr 3", [])
    assert split_command(["echo hi && ls"]) == ("echo hi && ls", [])
    cmd, bad = split_command(["python", "t.py", "-g", "2", "--name=x"])
    assert bad == ["-g", "--name=x"]
    assert split_command(["echo", "$(id)"])[0] == "echo '$(id)'"


def test_exit_codes_are_never_zero_for_killed_jobs():
    j = lambda state, code=None, sig=None: JobInfo("1", "n", "u", state, "p", exit_code=code, exit_signal=sig)
    assert exit_code_of(j("COMPLETED", 0)) == 0
    assert exit_code_of(j("FAILED", 3)) == 3
    assert exit_code_of(j("TIMEOUT", 0, 15)) != 0
    assert exit_code_of(j("CANCELLED", 0, 15)) == 143
    assert exit_code_of(j("TIMEOUT")) == 124
    assert exit_code_of(None) == 1


def test_run_ps_stop_on_demo(capsys, demo_home):
    code, out, err = rv(capsys, "--demo", "--seed", "3", "run", "-g", "1", "--json", "--", "python", "train.py")
    assert code == 0, err
    sub = json.loads(out)
    gid, ids = sub["group_id"], sub["job_ids"]
    assert ids and gid.startswith("g")
    assert (demo_home / "groups" / f"{gid}.json").exists()
    # the group is recorded locally with every submitted job id (ps/stop across commands are
    # covered by tests/test_demo_cli.py now that the demo persists)
    rec = json.loads((demo_home / "groups" / f"{gid}.json").read_text())
    assert [j["job_id"] for j in rec["jobs"] if j["job_id"]] == ids
    assert rec["command"] == "python train.py"


def test_up_dry_run_submits_nothing(capsys, demo_home):
    code, out, err = rv(capsys, "--demo", "--seed", "3", "up", "-g", "2", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["strategies"]
    assert not (demo_home / "groups").exists()


def test_exec_on_demo(capsys, demo_home):
    code, out, err = rv(capsys, "--demo", "exec", "--json", "echo", "a b")
    assert code == 0, err
    assert json.loads(out)["stdout"].strip() == "a b"


@pytest.mark.cluster
def test_run_follow_exit_code_and_stop(capsys, rv_home, own_jobs, outside_project, slurm_cluster):
    """rv run -f exits with the job's own exit code; rv ps shows the group; rv stop of a finished
    group is not an error."""
    marker = f"{slurm_cluster.scratch}/cli-{uuid.uuid4().hex}"
    code, out, err = rv(capsys, "run", "-f", "-g", "1", "-t", "v100", "--json", "--",
                        f"echo $SLURM_JOB_ID >> {marker}; exit 7")
    assert code == 7, (out, err)
    res = json.loads(out)
    assert res["outcome"] == "won" and res["exit_code"] == 7 and res["state"] == "FAILED"
    code, out, err = rv(capsys, "ps", "-a", "--json")
    assert code == 0, err
    groups = {g["group_id"]: g for g in json.loads(out)["groups"]}
    assert res["group_id"] in groups
    assert groups[res["group_id"]]["winner"] == res["winner"]
    code, out, err = rv(capsys, "stop", res["group_id"], "--json")
    assert code == 0, err
    assert json.loads(out)["cancelled"] == []
    code, out, err = rv(capsys, "exec", "cat", marker)
    assert out.split() == [res["winner"]]
