"""The group store: local records survive round trips, are private, and find jobs by id and name."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import datetime, timedelta, timezone

from rv_tui.jobs.reasons import reason_text
from rv_tui.jobs.store import (
    GitInfo, GroupJob, GroupRecord, GroupStore, git_info, merge_records, new_group_id,
)


def rec(gid: str, ids: list[str], name: str = "train", created: datetime | None = None, **kw) -> GroupRecord:
    jobs = tuple(GroupJob(job_id=j, strategy_id=f"s{i}", label=f"a6000 1x4 #{i}", gpu_type="a6000",
                          partition="gpu-a6000", nodes=1, gpus_per_node=4, name=name)
                 for i, j in enumerate(ids))
    return GroupRecord(id=gid, kind="run", name=name, command="python train.py --lr '3e-4'",
                       created_at=(created or datetime.now(timezone.utc)).isoformat(), jobs=jobs, **kw)


def test_round_trip_and_mode(tmp_path):
    store = GroupStore(tmp_path / "groups")
    r = rec("g1", ["11", "12"], git=GitInfo("main", "abcdef0123", True), winner="12")
    store.save(r)
    p = tmp_path / "groups" / "g1.json"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(p.parent).st_mode) == 0o700
    back = store.get("g1")
    assert back == r
    assert back.git.tag == "main@abcdef0*"
    assert json.loads(p.read_text())["jobs"][1]["job_id"] == "12"


def test_index_name_and_failed_submission(tmp_path):
    store = GroupStore(tmp_path)
    store.save(rec("g1", ["11", "12"], name="a"))
    failed = GroupJob(job_id=None, strategy_id="x", label="v100", gpu_type="v100", partition="gpu-v100",
                      nodes=1, gpus_per_node=4, error="QOS limit")
    store.save(rec("g2", ["21"], name="b").with_(jobs=rec("g2", ["21"]).jobs + (failed,)))
    assert store.find_job("12").id == "g1"
    assert store.find_job("99") is None
    assert [r.id for r in store.by_name("b")] == ["g2"]
    assert store.get("g2").job_ids == ["21"]  # the failed strategy has no id
    assert store.get("g2").jobs[-1].error == "QOS limit"


def test_prune_and_bad_files(tmp_path):
    store = GroupStore(tmp_path)
    store.save(rec("old", ["1"], created=datetime.now(timezone.utc) - timedelta(days=40)))
    store.save(rec("new", ["2"]))
    (tmp_path / "junk.json").write_text("{not json")
    assert {r.id for r in store.all()} == {"old", "new"}
    assert store.prune() == 1
    assert [r.id for r in store.all()] == ["new"]


def test_group_ids_are_unique_and_safe():
    ids = {new_group_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(i.isalnum() and i.startswith("g") for i in ids)


def test_bad_group_id_rejected(tmp_path):
    """A hostile id (from a remote record) can never name a file outside the store."""
    store = GroupStore(tmp_path / "g")
    for bad in ("../x", ".hidden", "", "a/b"):
        try:
            store.save(rec(bad, ["1"]))
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    assert store.get("../x") is None
    assert not (tmp_path / "x.json").exists()


def test_merge_prefers_local(tmp_path):
    local = rec("g1", ["1"], winner="1")
    remote = rec("g1", ["1"])
    other = rec("g2", ["2"], created=datetime.now(timezone.utc) - timedelta(hours=1))
    merged = merge_records([local], [remote, other])
    assert [r.id for r in merged] == ["g1", "g2"]
    assert merged[0].winner == "1"


def test_git_info(tmp_path):
    assert git_info(tmp_path) is None
    subprocess.run(["git", "init", "-q", "-b", "feature/x", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    info = git_info(tmp_path)
    assert info.branch == "feature/x" and len(info.commit) == 40 and not info.dirty


def test_reason_text():
    assert reason_text("Resources") == "waiting for resources"
    assert reason_text("(Priority)") == "waiting behind higher-priority jobs"
    assert reason_text("QOSMaxGRESPerUser").startswith("waiting: you already use your per-user GPU limit")
    assert reason_text("QOSSomethingNew") == "waiting on a QOS limit (QOSSomethingNew)"
    assert reason_text("ReqNodeNotAvail, UnavailableNodes:udc-an28-1") .startswith("requested nodes")
    assert reason_text(None) == ""
    assert reason_text("WeirdReason") == "WeirdReason"


def test_unreadable_record_is_reported_not_deleted(tmp_path) -> None:
    store = GroupStore(tmp_path / "groups")
    store.root.mkdir()
    bad = store.root / "gbroken.json"
    bad.write_text("{not json")
    assert store.all() == []
    assert store.unreadable == [bad]
    assert bad.exists()
