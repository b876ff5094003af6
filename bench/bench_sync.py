#!/usr/bin/env python3
"""Incremental push of one changed file in a 5,000-file git repository, vs a full copy.

All figures come from one run against the local test cluster's login node (over the same
persistent asyncssh connection):

* full: ``sync.push`` into an empty ``code/`` (every file travels: the full-copy baseline);
* incremental: edit one file, ``sync.push`` again (manifest + one small tar + apply);
* noop: ``sync.push`` with nothing changed (manifest only);
* dry run: the plan alone.

The ratio full / incremental is the figure; bytes sent and round trips are reported too.

Usage: python3 bench/bench_sync.py [--files 5000] [--repeat 3]   (needs the local test cluster;
RV_HOME must point at a config.toml for it, e.g. the one the test fixtures write)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rv_tui.cluster.ssh import SshCluster  # noqa: E402
from rv_tui.config import load_config  # noqa: E402
from rv_tui.quoting import q  # noqa: E402
from rv_tui.workspace import sync  # noqa: E402


def make_repo(root: Path, n: int) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        d = root / f"pkg{i % 50}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_text(f"# file {i}\n" + "x = 1\n" * (20 + i % 200))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-q",
                    "-m", "bench"], check=True)


def ensure_config() -> None:
    if os.environ.get("RV_HOME"):
        return
    info = json.loads(Path("/tmp/rv-test-cluster/cluster.json").read_text())
    home = Path(tempfile.mkdtemp(prefix="rv-bench-home-"))
    (home / "config.toml").write_text(f"""[connection]
host = "{info['host']}"
hostname = "{info['host']}"
user = "{info['user']}"
port = {info['port']}
identity_file = "{info['identity_file']}"
known_hosts = "{info['known_hosts']}"
[paths]
scratch = "{info['scratch']}"
[scratch_keepalive]
enabled = false
""")
    os.chmod(home / "config.toml", 0o600)
    os.environ["RV_HOME"] = str(home)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ensure_config()
    cluster = SshCluster.from_config(load_config())
    await cluster.connect()
    base = f"{cluster.scratch}/rv-workspaces/bench-{secrets.token_hex(3)}"
    fulls, incs, noops, drys = [], [], [], []
    full_res = inc_res = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "repo"
            make_repo(root, args.files)
            for r in range(args.repeat):
                code = f"{base}/run{r}/code"
                t = time.perf_counter()
                full_res = await sync.push(cluster, root, code)
                fulls.append(time.perf_counter() - t)
                target = root / "pkg3" / "mod3" / "f3.py"
                target.write_text(target.read_text() + f"y = {r}\n")
                t = time.perf_counter()
                drys.append(0.0)
                dry = await sync.push(cluster, root, code, dry_run=True)
                drys[-1] = time.perf_counter() - t
                t = time.perf_counter()
                inc_res = await sync.push(cluster, root, code)
                incs.append(time.perf_counter() - t)
                assert [f.rel for f in inc_res.plan.upload] == [f.rel for f in dry.plan.upload] == ["pkg3/mod3/f3.py"]
                t = time.perf_counter()
                await sync.push(cluster, root, code)
                noops.append(time.perf_counter() - t)
    finally:
        await cluster.exec(f"rm -rf {q(base)}", timeout=600)
        await cluster.close()
    med = statistics.median
    assert full_res is not None and inc_res is not None
    report = {
        "files": args.files,
        "full_s": round(med(fulls), 3), "full_bytes": full_res.bytes_sent, "full_round_trips": full_res.round_trips,
        "incremental_s": round(med(incs), 3), "incremental_bytes": inc_res.bytes_sent,
        "incremental_round_trips": inc_res.round_trips,
        "noop_s": round(med(noops), 3), "dry_run_s": round(med(drys), 3),
        "speedup_full_over_incremental": round(med(fulls) / med(incs), 1),
        "bytes_ratio_full_over_incremental": round(full_res.bytes_sent / max(inc_res.bytes_sent, 1), 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
