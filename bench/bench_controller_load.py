"""slurmctld load of rv, counted by slurmctld itself (``sdiag``): RPCs per minute of an idle
dashboard, and RPCs per invocation of ``rv ps``, ``rv status`` and ``rv up --dry-run``.

Why: an HPC centre judges a tool by what it costs the controller; a dashboard left open by a
hundred users must not add hundreds of RPCs a second. ``sdiag --reset`` (root) zeroes the
counters, the action runs, ``sdiag`` reports RPCs by message type and by user. The test cluster
is shared (other sessions' tests add RPCs as the same users), so sdiag's totals are noisy;
instead every remote command rv sent (its own command log) is re-run on this host as uid
``nobody`` and costed exactly by sdiag's per-user count. The dashboard runs headless for
``--window`` seconds (scaled to a minute).

Run: ``.venv/bin/python bench/bench_controller_load.py [--window 60]`` as root, with
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


_COST: dict[str, int] = {}


def rpc_cost(cmd: str) -> int:
    """Exact slurmctld RPCs of one remote command: run it on this host as ``nobody`` (no other
    session uses that uid) and read sdiag's per-user count. Cached per command string."""
    if cmd not in _COST:
        sdiag_reset()
        subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", cmd], capture_output=True,
                       env=sdiag_env(), cwd="/", timeout=120, stdin=subprocess.DEVNULL)
        _, by_user = sdiag_counts()
        _COST[cmd] = by_user.get("nobody", 0)
    return _COST[cmd]


def kind_of(cmd: str) -> str:
    for word in ("sbatch --test-only", "sinfo", "squeue", "scontrol", "sacct", "sbatch", "scancel"):
        if word in cmd:
            return word
    return "other (no Slurm call)"


async def dashboard(window: float, backfill: bool = False) -> tuple[list[str], int, Counter[str], bool]:
    """The TUI, headless, idle on its first (Cluster) pane for ``window`` seconds: the remote
    commands it sent, its polls, and sdiag's (noisy, shared-cluster) counts by type meanwhile.
    ``backfill``: with the backfill column switched on (``b``; off by default)."""
    from rv_tui.cluster import open_cluster
    from rv_tui.config import config_path, load_config
    from rv_tui.tui.app import RvApp

    cluster = await open_cluster(load_config())
    try:
        app = RvApp(cluster, config_path=config_path())  # the defaults a user gets
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            if backfill:
                from rv_tui.tui.panes.cluster import ClusterPane

                pane = app.query_one(ClusterPane)
                if hasattr(pane, "show_backfill"):
                    pane.show_backfill = True
            log = cluster.pool.command_log  # type: ignore[attr-defined]
            n0, p0 = log.total, app.poller.polls
            sdiag_reset()
            t0 = time.monotonic()
            while time.monotonic() - t0 < window:
                await asyncio.sleep(0.25)
            by_type, _ = sdiag_counts()
            recs = log.records()[-(log.total - n0):] if log.total > n0 else []
            polls = app.poller.polls - p0
            busy = app.poller._busy
    finally:
        await cluster.close()
    return [r.command for r in recs if r.kind in ("run", "batch")], polls, by_type, busy


def invocation_commands(args: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    """The remote commands one ``rv`` invocation sends (its pool's command log, direct mode)."""
    code = f"""
import json, os, sys, io, contextlib
os.chdir({str(cwd)!r})
from rv_tui.remote import pool as P
made = []
orig = P.RemotePool.__init__
def init(self, *a, **k):
    orig(self, *a, **k); made.append(self)
P.RemotePool.__init__ = init
from rv_tui.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    rc = main({args!r})
print(json.dumps([r.command for p in made for r in p.command_log.records() if r.kind in ("run", "batch")]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=str(ROOT), timeout=300)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=60.0, help="dashboard seconds (scaled to a minute)")
    ap.add_argument("--show", action="store_true", help="list the dashboard's remote commands")
    ap.add_argument("--backfill", action="store_true", help="with the backfill column on (b)")
    ap.add_argument("--no-invocations", action="store_true", help="the dashboard only")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("sdiag --reset and runuser need root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="rv-bench-ctl-"))
    cwd = work / "not-a-project"
    cwd.mkdir()
    home = make_home(work)
    os.environ["RV_HOME"] = str(home)
    os.environ["RV_NO_AGENT"] = "1"  # the controller sees the same RPCs either way
    env = dict(os.environ)

    cmds, polls, by_type, busy = asyncio.run(dashboard(opts.window, opts.backfill))
    scale = 60.0 / opts.window
    per_kind: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for c in cmds:
        per_kind[kind_of(c)] += rpc_cost(c)
        calls[kind_of(c)] += 1
    if opts.show:
        for c, n in Counter(cmds).most_common():
            print(f"{n:3d}x {rpc_cost(c)} RPCs  {c[:150]!r}")
    print(f"\nIdle dashboard (Cluster pane, {'backfill column on' if opts.backfill else 'default settings'}), {opts.window:g} s window scaled to a "
          f"minute, {polls} polls; RPCs counted exactly per command (run as uid nobody):\n")
    print("| Slurm command | calls per minute | slurmctld RPCs per minute |")
    print("|---|---|---|")
    for k in sorted(calls):
        print(f"| {k} | {calls[k] * scale:.1f} | {per_kind[k] * scale:.1f} |")
    print(f"| **total** | {sum(calls.values()) * scale:.1f} | **{sum(per_kind.values()) * scale:.1f}** |")
    probes = per_kind.get("sbatch --test-only", 0)
    if polls:
        print(f"\n{(sum(per_kind.values()) - probes) / polls:.1f} RPCs per poll without backfill probes; "
              f"the user {'HAD' if busy else 'had no'} jobs queued (shared test user: other sessions' "
              f"jobs count), so polls ran every {'interval (5 s)' if busy else '15 s'}")
    noisy = rv_types(by_type)
    print("\n(sdiag by type in the same window, whole shared cluster, per minute: "
          + ", ".join(f"{k.removeprefix('REQUEST_')} {v * scale:.0f}" for k, v in noisy.items()) + ")")

    if opts.no_invocations:
        return 0
    print("\nPer invocation:\n")
    print("| command | remote commands | slurmctld RPCs |")
    print("|---|---|---|")
    for label, args in (("rv ps", ["ps"]), ("rv status", ["status"]),
                        ("rv up --dry-run -g 4", ["up", "--dry-run", "-g", "4", "--time", "2h"])):
        ic = invocation_commands(args, env, cwd)
        kinds: Counter[str] = Counter()
        for c in ic:
            kinds[kind_of(c)] += rpc_cost(c)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if v)
        print(f"| `{label}` | {len(ic)} | {sum(kinds.values())} ({detail}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
