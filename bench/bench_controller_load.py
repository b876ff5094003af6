"""slurmctld load of rv, counted by slurmctld itself (``sdiag``): RPCs per minute of an idle
dashboard, and RPCs per invocation of ``rv ps``, ``rv status`` and ``rv up --dry-run``.

Why: an HPC centre judges a tool by what it costs the controller; a dashboard left open by a
hundred users must not add hundreds of RPCs a second. ``sdiag --reset`` (root) zeroes the
counters, the action runs, ``sdiag`` reports RPCs by message type and by user. The test cluster
is shared (other sessions' tests add RPCs as the same users), so each figure is the minimum of
``--repeat`` runs for the invocations; the dashboard window is one run (``--window`` seconds,
scaled to a minute), and its by-type table counts only the types rv sends.

Run: ``.venv/bin/python bench/bench_controller_load.py [--window 60] [--repeat 3]`` as root, with
the local test cluster up (tests/cluster/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STATE = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster"))
RV_TYPES = ("REQUEST_NODE_INFO", "REQUEST_PARTITION_INFO", "REQUEST_JOB_INFO", "REQUEST_JOB_USER_INFO",
            "REQUEST_FED_INFO", "REQUEST_JOB_WILL_RUN", "REQUEST_JOB_INFO_SINGLE", "REQUEST_STATS_INFO",
            "REQUEST_BUILD_INFO", "REQUEST_SHARE_INFO", "REQUEST_RESERVATION_INFO",
            "REQUEST_SUBMIT_BATCH_JOB", "REQUEST_CANCEL_JOB_STEP", "REQUEST_KILL_JOB")


def sdiag_env() -> dict[str, str]:
    info = json.loads((STATE / "cluster.json").read_text())
    return dict(os.environ, SLURM_CONF=info["slurm_conf"])


def sdiag_reset() -> None:
    subprocess.run(["sdiag", "--reset"], capture_output=True, check=True, env=sdiag_env())


def sdiag_counts() -> tuple[Counter[str], Counter[str]]:
    """(RPCs by message type, RPCs by user) since the last reset."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True, env=sdiag_env()).stdout
    by_type: Counter[str] = Counter()
    by_user: Counter[str] = Counter()
    section = None
    for line in out.splitlines():
        if "by message type" in line:
            section = "type"
            continue
        if "by user" in line:
            section = "user"
            continue
        if "Pending RPC" in line:
            section = None
        m = re.match(r"\s*(\S+)\s+\(\s*\d+\)\s+count:(\d+)", line)
        if m and section == "type":
            by_type[m.group(1)] += int(m.group(2))
        elif m and section == "user":
            by_user[m.group(1)] += int(m.group(2))
    return by_type, by_user


def make_home(work: Path) -> Path:
    info = json.loads((STATE / "cluster.json").read_text())
    home = work / "rv-home"
    home.mkdir(parents=True)
    cfg = home / "config.toml"
    cfg.write_text(f"""[connection]
host = "{info['host']}"
hostname = "{info['host']}"
user = "{info['user']}"
port = {info['port']}
identity_file = "{info['identity_file']}"
known_hosts = "{info['known_hosts']}"

[defaults]
account = "{info['user']}"

[paths]
scratch = "{info['scratch']}"

[scratch_keepalive]
enabled = false
""")
    os.chmod(cfg, 0o600)
    return home


def rv_types(c: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in sorted(c.items()) if k in RV_TYPES and v}


async def dashboard(window: float) -> tuple[Counter[str], Counter[str], int]:
    """The TUI, headless, idle on its first (Cluster) pane for ``window`` seconds."""
    from rv_tui.cluster import open_cluster
    from rv_tui.config import config_path, load_config
    from rv_tui.tui.app import RvApp

    cluster = await open_cluster(load_config())
    polls = 0
    try:
        app = RvApp(cluster, config_path=config_path())  # the defaults a user gets
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            sdiag_reset()
            t0 = time.monotonic()
            start_polls = app.poller.polls
            while time.monotonic() - t0 < window:
                await asyncio.sleep(0.5)
            by_type, by_user = sdiag_counts()
            polls = app.poller.polls - start_polls
    finally:
        await cluster.close()
    return by_type, by_user, polls


def invocation(args: list[str], env: dict[str, str], cwd: Path) -> tuple[Counter[str], Counter[str]]:
    sdiag_reset()
    r = subprocess.run([sys.executable, "-m", "rv_tui", *args], capture_output=True, text=True, env=env,
                       cwd=str(cwd), timeout=300, stdin=subprocess.DEVNULL)
    counts = sdiag_counts()
    if r.returncode != 0:
        print(f"  rv {' '.join(args)} exited {r.returncode}: {r.stderr.strip()[:300]}", file=sys.stderr)
    return counts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=60.0, help="dashboard seconds (scaled to a minute)")
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("sdiag --reset needs root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="rv-bench-ctl-"))
    cwd = work / "not-a-project"
    cwd.mkdir()
    home = make_home(work)
    os.environ["RV_HOME"] = str(home)
    os.environ["RV_NO_AGENT"] = "1"  # the controller sees the same RPCs either way; keep it simple
    user = json.loads((STATE / "cluster.json").read_text())["user"]
    env = dict(os.environ)

    by_type, by_user, polls = asyncio.run(dashboard(opts.window))
    scale = 60.0 / opts.window
    mine = rv_types(by_type)
    print(f"\nIdle dashboard (Cluster pane, default settings), {opts.window:g} s window scaled to a minute, "
          f"{polls} polls:\n")
    print("| RPC type | per minute |")
    print("|---|---|")
    for k, v in mine.items():
        print(f"| {k} | {v * scale:.1f} |")
    print(f"| **total (these types)** | **{sum(mine.values()) * scale:.1f}** |")
    print(f"| all RPCs by user {user} (includes other sessions' tests) | {by_user.get(user, 0) * scale:.1f} |")

    rows = []
    for label, args in (("rv ps", ["ps"]), ("rv status", ["status"]),
                        ("rv up --dry-run -g 4", ["up", "--dry-run", "-g", "4", "--time", "2h"])):
        runs = [invocation(args, env, cwd) for _ in range(opts.repeat)]
        best = min(runs, key=lambda r: sum(rv_types(r[0]).values()))
        rows.append((label, rv_types(best[0])))
    print("\nPer invocation (minimum of %d runs):\n" % opts.repeat)
    print("| command | RPCs | by type |")
    print("|---|---|---|")
    for label, types in rows:
        detail = ", ".join(f"{k.removeprefix('REQUEST_')} {v}" for k, v in types.items())
        print(f"| `{label}` | {sum(types.values())} | {detail} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
