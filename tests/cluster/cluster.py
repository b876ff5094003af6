#!/usr/bin/env python3
"""Start/stop the project's real local Slurm test cluster (Rivanna-like) on one Debian host.

Why this exists: rv-tui's end-to-end tests must run against real Slurm (real sbatch/squeue
output, real scheduling, real SSH), not a mock. This script builds a private cluster:

* one munged (own key, own socket), one slurmctld, one slurmd per fake node (each in its own
  UTS namespace so `hostname` == node name), fake GPUs via gres.conf File= symlinks to /dev/null;
* a private sshd on 127.0.0.1 (own host key, key-only auth) for the test user `rvtest`;
* accounting like Rivanna's: a private MariaDB (own datadir, unix socket only, no TCP) and
  slurmdbd on 127.0.0.1:DBD_PORT; associations for the test users, a partition QOS on every
  GPU partition holding the per-user per-type GPU limits of the seeds' table
  (``MaxTRESPerUser=gres/gpu:<type>=N``), AccountingStorageEnforce=associations,limits,qos;
  the background-load user (`rvother`, "everyone else") runs in a QOS that overrides it;
* all state/spool/log/pid files under one directory (default /tmp/rv-test-cluster,
  override with env RV_TEST_CLUSTER_DIR), described by STATE_DIR/cluster.json.

Stdlib only (runs with the system python3 before any venv exists). Must run as root.

    python3 tests/cluster/cluster.py start|stop|status|info
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster")).resolve()
CTLD_PORT = int(os.environ.get("RV_TEST_SLURMCTLD_PORT", "6817"))
SLURMD_PORT_BASE = int(os.environ.get("RV_TEST_SLURMD_PORT_BASE", "6900"))
# Not Slurm's default 6819, so a system slurmdbd on the same host never collides with ours.
DBD_PORT = int(os.environ.get("RV_TEST_SLURMDBD_PORT", "6839"))
DEFAULT_STATE = Path("/tmp/rv-test-cluster")
CTLD_HOST = "rv-slurmctld"
USER = "rvtest"
OTHER_USER = "rvother"
SCRATCH = Path("/scratch") / USER
HOSTS_BEGIN = "# BEGIN rv-test-cluster (managed by tests/cluster/cluster.py)"
HOSTS_END = "# END rv-test-cluster"
TZ = "America/New_York"

# (type key, gres type name, gpus per node, type partition, node names, cpus, memory MB, features)
GPU_NODES: list[tuple[str, str, int, str, list[str], int, int, list[str]]] = [
    ("mig", "1g.10gb", 56, "gpu-mig", ["udc-an26-1"], 128, 2000000, []),
    ("rtx3090", "rtx3090", 4, "interactive-rtx3090", ["udc-ba27-1", "udc-ba27-2"], 32, 257000, []),
    ("a6000", "a6000", 8, "gpu-a6000", ["udc-an37-1", "udc-an37-2", "udc-an37-3"], 48, 257000, []),
    ("a40", "a40", 8, "gpu-a40", ["udc-an38-1", "udc-an38-2"], 48, 257000, []),
    ("a100_40", "a100", 8, "gpu-a100-40", ["udc-an34-1", "udc-an34-2"], 128, 512000, ["a100_40gb"]),
    ("a100_80", "a100", 8, "gpu-a100-80", ["udc-an36-1", "udc-an36-2"], 128, 1000000,
     ["gpupod", "a100_80gb"]),
    ("v100", "v100", 4, "gpu-v100", ["udc-ba26-1", "udc-ba26-2"], 40, 384000, []),
    ("h200", "h200", 8, "gpu-h200", ["udc-an40-1", "udc-an40-2"], 64, 1500000, []),
]
CPU_NODES = ["udc-ba30-1", "udc-ba30-2"]
CPU_NODE_CPUS, CPU_NODE_MEM = 40, 375000
GPU_PARTITION_TYPES = {"a6000", "a40", "a100_40", "a100_80", "v100", "h200"}
# Per-user GPU limits by GRES type (the seeds' "max/user" column; both A100 sizes share the
# GRES type "a100" and its 32). Kept in step with rv_tui/gpus.py by tests/test_limits_cluster.py.
GPU_MAX_PER_USER = {"1g.10gb": 28, "rtx3090": 2, "a6000": 32, "a40": 32, "a100": 32, "v100": 32,
                    "h200": 4}
GPU_QOS = "rv-gpu"  # partition QOS of every GPU partition: the per-user per-type limits
LOAD_QOS = "rv-load"  # rvother's QOS: "everyone else" on the cluster, not one limited user
# account -> users (the accounts of allocations.txt; rvother is the background load).
ACCOUNTS = {USER: [USER], f"{USER}_lab": [USER], OTHER_USER: [OTHER_USER]}
# RV_TEST_ACCOUNTING=0: the cluster without slurmdbd (sacct says "accounting storage is disabled").
ACCOUNTING = os.environ.get("RV_TEST_ACCOUNTING", "1") != "0"
MIN_JOB_AGE = 60  # finished jobs stay in squeue/scontrol this long (+ up to a 60 s purge tick)


def all_nodes() -> list[str]:
    names = [n for spec in GPU_NODES for n in spec[4]]
    return names + CPU_NODES


def log(msg: str) -> None:
    print(f"[rv-test-cluster] {msg}", flush=True)


# ---------------------------------------------------------------- paths

class P:
    etc = STATE / "etc"
    conf = etc / "slurm.conf"
    gres = etc / "gres.conf"
    plugstack = etc / "plugstack.conf"
    dev = STATE / "dev"
    run = STATE / "run"
    logs = STATE / "log"
    slurm_state = STATE / "slurm" / "state"
    spool = STATE / "slurm" / "spool"
    munge = STATE / "munge"
    munge_key = munge / "munge.key"
    munge_sock = munge / "munge.socket.2"
    munge_pid = run / "munged.pid"
    ssh = STATE / "ssh"
    sshd_config = ssh / "sshd_config"
    host_key = ssh / "ssh_host_ed25519_key"
    sshd_pid = run / "sshd.pid"
    known_hosts = ssh / "known_hosts"
    id_key = ssh / "id_ed25519"
    bin = STATE / "bin"
    site = STATE / "site"
    info = STATE / "cluster.json"
    ctld_pid = run / "slurmctld.pid"
    dbd_conf = etc / "slurmdbd.conf"
    dbd_pid = run / "slurmdbd.pid"
    mysql = STATE / "mysql"
    mysql_data = mysql / "data"
    mysql_sock = mysql / "mysqld.sock"
    mysql_pid = run / "mariadb.pid"


def slurmd_pid_file(node: str) -> Path:
    return P.run / f"slurmd-{node}.pid"


# ---------------------------------------------------------------- process helpers

def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int | None, needle: str) -> bool:
    """True if pid runs and its command line contains needle (guards against stale/reused pids)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    return needle in cmdline(pid)


def pid_alive(path: Path, needle: str) -> int | None:
    pid = read_pid(path)
    return pid if alive(pid, needle) else None


def wait_for(pred, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def run(cmd: list[str], check: bool = True, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, env=env, **kw)


def slurm_env() -> dict:
    env = dict(os.environ)
    env["SLURM_CONF"] = str(P.conf)
    return env


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"({path} missing)"


# ---------------------------------------------------------------- config generation

def slurm_conf() -> str:
    lines = [
        "# Generated by tests/cluster/cluster.py: rv-tui's local Rivanna-like test cluster.",
        "ClusterName=rivanna-test",
        f"SlurmctldHost={CTLD_HOST}(127.0.0.1)",
        f"SlurmctldPort={CTLD_PORT}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={P.munge_sock}",
        f"StateSaveLocation={P.slurm_state}",
        f"SlurmdSpoolDir={P.spool}/%n",
        f"SlurmctldPidFile={P.ctld_pid}",
        f"SlurmdPidFile={P.run}/slurmd-%n.pid",
        f"SlurmctldLogFile={P.logs}/slurmctld.log",
        f"SlurmdLogFile={P.logs}/slurmd-%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        f"PlugStackConfig={P.plugstack}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SwitchType=switch/none",
        "MpiDefault=none",
        # job mail is recorded, not sent (tests/cluster/mailprog.sh -> STATE/mail/mail.log)
        f"MailProg={P.bin / 'mailprog.sh'}",  # a copy in the state dir: slurm.conf is the same from any checkout
        *accounting_lines(),
        "JobCompType=jobcomp/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=4000",
        "GresTypes=gpu",
        "SlurmdParameters=config_overrides",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=1,bf_interval=1,bf_resolution=60,"
        "sched_min_interval=0,batch_sched_delay=0",
        "FirstJobId=1000001",
        "EnforcePartLimits=ALL",
        f"MinJobAge={MIN_JOB_AGE}",
        "KillWait=5",
        "ReturnToService=2",
        "SlurmdTimeout=300",
        "SlurmctldTimeout=120",
        "InactiveLimit=0",
        "MessageTimeout=10",
        "TreeWidth=65533",
        "PropagateResourceLimits=NONE",
        "TmpFS=/tmp",
        "",
    ]
    port = SLURMD_PORT_BASE
    for _key, gtype, count, _part, names, cpus, mem, feats in GPU_NODES:
        for name in names:
            feat = f" Feature={','.join(feats)}" if feats else ""
            lines.append(
                f"NodeName={name} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} Boards=1 "
                f"SocketsPerBoard=2 CoresPerSocket={cpus // 2} ThreadsPerCore=1 "
                f"RealMemory={mem} Gres=gpu:{gtype}:{count}{feat} State=UNKNOWN"
            )
            port += 1
    for name in CPU_NODES:
        lines.append(
            f"NodeName={name} NodeAddr=127.0.0.1 Port={port} CPUs={CPU_NODE_CPUS} Boards=1 "
            f"SocketsPerBoard=2 CoresPerSocket={CPU_NODE_CPUS // 2} ThreadsPerCore=1 "
            f"RealMemory={CPU_NODE_MEM} State=UNKNOWN"
        )
        port += 1
    lines.append("")
    gpu_part_nodes = [n for spec in GPU_NODES if spec[0] in GPU_PARTITION_TYPES for n in spec[4]]
    qos = f" QOS={GPU_QOS}" if ACCOUNTING else ""
    lines.append(f"PartitionName=gpu Nodes={','.join(gpu_part_nodes)} MaxTime=3-00:00:00{qos} State=UP")
    for key, _g, _c, part, names, *_ in GPU_NODES:
        maxtime = "12:00:00" if key == "rtx3090" else "3-00:00:00"
        lines.append(f"PartitionName={part} Nodes={','.join(names)} MaxTime={maxtime}{qos} State=UP")
    cpu = ",".join(CPU_NODES)
    lines.append(f"PartitionName=standard Nodes={cpu} Default=YES MaxTime=7-00:00:00 State=UP")
    lines.append(f"PartitionName=interactive Nodes={cpu} MaxTime=12:00:00 State=UP")
    return "\n".join(lines) + "\n"


def gres_conf() -> str:
    lines = ["# Fake GPUs: File= entries are symlinks to /dev/null (Slurm drops file-less typed GPUs).",
             "AutoDetect=off"]
    for _key, gtype, count, _part, names, cpus, *_ in GPU_NODES:
        for name in names:
            # Cores= (all cores) only so sinfo shows Rivanna's "gpu:a6000:8(S:0-1)" form.
            lines.append(f"NodeName={name} Name=gpu Type={gtype} File={P.dev}/nvidia[0-{count - 1}]"
                         f" Cores=0-{cpus - 1}")
    return "\n".join(lines) + "\n"


def accounting_lines() -> list[str]:
    if not ACCOUNTING:
        return ["JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none"]
    return [
        # linux gather + OverMemoryKill: a step over its --mem is killed (no cgroups here).
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=task=2",
        "JobAcctGatherParams=OverMemoryKill",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=127.0.0.1",
        f"AccountingStoragePort={DBD_PORT}",
        f"AccountingStoragePass={P.munge_sock}",  # the munge socket for talking to slurmdbd
        "AccountingStorageEnforce=associations,limits,qos",
        "AccountingStorageTRES=gres/gpu," + ",".join(f"gres/gpu:{t}" for t in GPU_MAX_PER_USER),
    ]


def slurmdbd_conf() -> str:
    """slurmdbd on loopback only; MariaDB reached over its private unix socket as root
    (unix_socket auth, so no database password exists anywhere)."""
    return "\n".join([
        "# Generated by tests/cluster/cluster.py: the test cluster's accounting daemon.",
        "AuthType=auth/munge",
        f"AuthInfo=socket={P.munge_sock}",
        "DbdHost=localhost",
        "DbdAddr=127.0.0.1",
        f"DbdPort={DBD_PORT}",
        "SlurmUser=root",
        "DebugLevel=info",
        f"LogFile={P.logs}/slurmdbd.log",
        f"PidFile={P.dbd_pid}",
        "StorageType=accounting_storage/mysql",
        "StorageHost=localhost",
        "StorageUser=root",
        "StorageLoc=slurm_acct_db",
        "",
    ])


def hosts_block() -> str:
    names = [CTLD_HOST] + all_nodes()
    body = "\n".join(f"127.0.0.1 {n}" for n in names)
    return f"{HOSTS_BEGIN}\n{body}\n{HOSTS_END}\n"


ALLOCATIONS_DEFAULT = """\
Account                      Balance        Reserved       Available
-----------------          ---------       ---------       ---------
rvtest                        100000               0           87654
rvtest_lab                     50000            1200           41000

for more information about a specific allocation,
run: 'allocations -a <allocation name>'
"""

HDQUOTA_DEFAULT = """\
Storage Type                    Location                 Size       Used      Avail   Use%
--------------------------------------------------------------------------------------------
Home Directory                  /home/rvtest            200 GB    12.5 GB   187.5 GB     6%
Scratch Directory               /scratch/rvtest          10 TB     1.2 TB     8.8 TB    12%
"""


def site_tool(name: str) -> str:
    return (
        "#!/bin/sh\n"
        f"# Stand-in for the Rivanna site tool '{name}' (rv-tui test cluster).\n"
        f"# Tests may overwrite {P.site}/{name}.txt to change the output.\n"
        f"exec cat {P.site}/{name}.txt\n"
    )


def sshd_config(port: int) -> str:
    path = f"{P.bin}:/usr/local/bin:/usr/bin:/bin"
    return "\n".join([
        "# Private sshd for rv-tui's test cluster login node.",
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {P.host_key}",
        f"PidFile {P.sshd_pid}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin no",
        "UsePAM no",
        f"AllowUsers {USER}",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "X11Forwarding no",
        "AllowTcpForwarding yes",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
        f"SetEnv TZ={TZ} SLURM_CONF={P.conf} PATH={path}",
        "",
    ])


# ---------------------------------------------------------------- setup steps

def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    try:
        if path.read_text() == text:
            os.chmod(path, mode)
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "-m", "-s", "/bin/bash", "-p", "*", name])
        pw = pwd.getpwnam(name)
    # '*' = no password but not locked ('!' would make sshd refuse the account).
    shadow = run(["getent", "shadow", name], check=False).stdout
    if shadow.split(":")[1:2] and shadow.split(":")[1].startswith("!"):
        run(["usermod", "-p", "*", name])
    home = Path(pw.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True)
        os.chown(home, pw.pw_uid, pw.pw_gid)
    os.chmod(home, 0o755)
    return pw


def ensure_hosts() -> None:
    hosts = Path("/etc/hosts")
    text = hosts.read_text()
    block = hosts_block()
    if block in text:
        return
    if HOSTS_BEGIN in text and HOSTS_END in text:
        pre, rest = text.split(HOSTS_BEGIN, 1)
        post = rest.split(HOSTS_END, 1)[1].lstrip("\n")
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n" + block
    # /etc/hosts may be a bind mount in containers: write in place, not by rename.
    with open(hosts, "w") as f:
        f.write(text)


def ensure_etc_slurm_links() -> None:
    """Point /etc/slurm/{slurm,gres}.conf at ours so any process without SLURM_CONF finds the
    cluster (jobs with --export=NONE, plain root shells). Never clobber a foreign real file."""
    if STATE != DEFAULT_STATE:
        return  # a second (experimental) cluster never takes over the host's /etc/slurm
    etc = Path("/etc/slurm")
    etc.mkdir(parents=True, exist_ok=True)
    for name, target in (("slurm.conf", P.conf), ("gres.conf", P.gres)):
        link = etc / name
        if link.is_symlink():
            if os.readlink(link) == str(target):
                continue
            link.unlink()
        elif link.exists():
            log(f"note: {link} exists and is not ours; leaving it (SLURM_CONF still points at ours)")
            continue
        link.symlink_to(target)


def prepare_files(port: int) -> bool:
    """Write every config file; return True if slurm.conf/gres.conf changed."""
    for d in (STATE, P.etc, P.dev, P.run, P.logs, P.slurm_state, P.spool, P.munge, P.ssh, P.bin, P.site):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(STATE, 0o755)
    for d in (P.etc, P.dev, P.bin, P.site, P.ssh, P.run, P.logs):
        os.chmod(d, 0o755)
    os.chmod(P.munge, 0o755)  # clients (rvtest) need the socket
    maxgpu = max(spec[2] for spec in GPU_NODES)
    for i in range(maxgpu):
        dev = P.dev / f"nvidia{i}"
        if not dev.is_symlink():
            dev.symlink_to("/dev/null")
    for node in all_nodes():
        (P.spool / node).mkdir(exist_ok=True)
    changed = write_if_changed(P.conf, slurm_conf())
    changed |= write_if_changed(P.gres, gres_conf())
    if ACCOUNTING:
        write_if_changed(P.dbd_conf, slurmdbd_conf(), 0o600)  # slurmdbd insists on 0600
    write_if_changed(P.plugstack, "# empty: no SPANK plugins in the test cluster\n")
    for tool, default in (("allocations", ALLOCATIONS_DEFAULT), ("hdquota", HDQUOTA_DEFAULT)):
        if not (P.site / f"{tool}.txt").exists():
            write_if_changed(P.site / f"{tool}.txt", default)
        write_if_changed(P.bin / tool, site_tool(tool), 0o755)
    write_if_changed(P.bin / "mailprog.sh", (Path(__file__).resolve().parent / "mailprog.sh").read_text(), 0o755)
    return changed


def ensure_users() -> None:
    pw = ensure_user(USER)
    ensure_user(OTHER_USER)
    SCRATCH.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(SCRATCH.parent, 0o755)
    SCRATCH.mkdir(exist_ok=True)
    os.chown(SCRATCH, pw.pw_uid, pw.pw_gid)
    os.chmod(SCRATCH, 0o755)
    if not P.id_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rvtest@rv-test-cluster", "-f", str(P.id_key)])
    os.chmod(P.id_key, 0o600)
    pub = Path(str(P.id_key) + ".pub").read_text().strip()
    sshdir = Path(pw.pw_dir) / ".ssh"
    sshdir.mkdir(exist_ok=True)
    auth = sshdir / "authorized_keys"
    existing = auth.read_text() if auth.exists() else ""
    if pub not in existing:
        auth.write_text(existing + ("" if not existing or existing.endswith("\n") else "\n") + pub + "\n")
    for p, mode in ((sshdir, 0o700), (auth, 0o600)):
        os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(p, mode)


def ensure_munge() -> None:
    if pid_alive(P.munge_pid, "munged") and P.munge_sock.exists():
        return
    if not P.munge_key.exists():
        run(["mungekey", "-c", "-k", str(P.munge_key)])
    os.chmod(P.munge_key, 0o600)
    for stale in (P.munge_sock, Path(str(P.munge_sock) + ".lock"), P.munge_pid):
        stale.unlink(missing_ok=True)
    run(["munged", "--force", f"--key-file={P.munge_key}", f"--socket={P.munge_sock}",
         f"--pid-file={P.munge_pid}", f"--log-file={P.logs}/munged.log",
         f"--seed-file={P.munge}/munged.seed"])
    wait_for(lambda: P.munge_sock.exists() and pid_alive(P.munge_pid, "munged"), 10, "munged")


# ---------------------------------------------------------------- accounting

MARIADB_ARGS = [
    "--no-defaults", f"--datadir={P.mysql_data}", f"--socket={P.mysql_sock}",
    f"--pid-file={P.mysql_pid}", "--skip-networking", "--user=root", "--skip-name-resolve",
    f"--log-error={P.logs}/mariadb.log", "--performance-schema=OFF", "--skip-log-bin",
    # A test database: small, and speed over durability (a crash only loses test history).
    "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=32M",
    "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--sync-binlog=0",
    "--max-connections=50", "--innodb-lock-wait-timeout=900",
]


def mysql_env() -> dict:
    env = slurm_env()
    env["MYSQL_UNIX_PORT"] = str(P.mysql_sock)  # libmariadb's default socket: slurmdbd finds ours
    return env


def sql(statement: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["mariadb", "--no-defaults", f"--socket={P.mysql_sock}", "-u", "root", "-N", "-B",
                "-e", statement], check=check)


def ensure_mariadb() -> None:
    """A private MariaDB: created once (mariadb-install-db into a temp dir, then renamed, so an
    interrupted first start never leaves half a datadir), started by pid, socket only."""
    if pid_alive(P.mysql_pid, "mariadbd") and P.mysql_sock.exists():
        return
    P.mysql.mkdir(parents=True, exist_ok=True)
    os.chmod(P.mysql, 0o700)
    if not (P.mysql_data / "mysql").is_dir():
        tmp = P.mysql / "data.init"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(P.mysql_data, ignore_errors=True)
        r = run(["mariadb-install-db", "--no-defaults", f"--datadir={tmp}", "--user=root",
                 "--auth-root-authentication-method=socket", "--skip-test-db",
                 "--skip-name-resolve"], check=False)
        if r.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
        os.replace(tmp, P.mysql_data)
    P.mysql_pid.unlink(missing_ok=True)
    P.mysql_sock.unlink(missing_ok=True)
    with open(P.logs / "mariadb.out", "ab") as out:
        subprocess.Popen(["/usr/sbin/mariadbd", *MARIADB_ARGS], stdin=subprocess.DEVNULL,
                         stdout=out, stderr=out, start_new_session=True)
    try:
        wait_for(lambda: P.mysql_sock.exists() and pid_alive(P.mysql_pid, "mariadbd")
                 and sql("SELECT 1", check=False).returncode == 0, 30, "mariadb", 0.1)
    except RuntimeError as e:
        raise RuntimeError(f"{e}\n{tail(P.logs / 'mariadb.log')}") from None


def dbd_listening() -> bool:
    s = socket.socket()
    s.settimeout(0.2)
    try:
        s.connect(("127.0.0.1", DBD_PORT))
        return True
    except OSError:
        return False
    finally:
        s.close()


def ensure_slurmdbd() -> None:
    if pid_alive(P.dbd_pid, "slurmdbd") and dbd_listening():
        return
    P.dbd_pid.unlink(missing_ok=True)
    r = run(["slurmdbd"], check=False, env=mysql_env())
    if r.returncode != 0:
        raise RuntimeError(f"slurmdbd failed: {r.stderr}\n{tail(P.logs / 'slurmdbd.log')}")
    try:
        wait_for(lambda: pid_alive(P.dbd_pid, "slurmdbd") and dbd_listening(), 30, "slurmdbd", 0.1)
    except RuntimeError as e:
        raise RuntimeError(f"{e}\n{tail(P.logs / 'slurmdbd.log')}") from None


def sacctmgr_script() -> str:
    """Idempotent: sacctmgr says "Nothing new added" for what exists."""
    lines = [
        "add cluster rivanna-test",
        f"add qos {GPU_QOS}",
        f"add qos {LOAD_QOS}",
        f"modify qos {LOAD_QOS} set Flags=OverPartQOS",
    ]
    for account in ACCOUNTS:
        lines.append(f"add account {account} cluster=rivanna-test Description=rv-test Organization=rv")
    for user in sorted({u for users in ACCOUNTS.values() for u in users}):
        accounts = ",".join(a for a, us in ACCOUNTS.items() if user in us)
        default = user if user in ACCOUNTS else accounts.split(",")[0]
        extra = f" qos=normal,{LOAD_QOS} DefaultQOS={LOAD_QOS}" if user == OTHER_USER else ""
        lines.append(f"add user {user} account={accounts} DefaultAccount={default}"
                     f" cluster=rivanna-test{extra}")
    return "\n".join(lines) + "\nexit\n"


def _associations() -> tuple[set[tuple[str, ...]], subprocess.CompletedProcess]:
    r = run(["sacctmgr", "-n", "-P", "show", "assoc", "cluster=rivanna-test",
             "format=account,user,qos"], check=False, env=slurm_env())
    return {tuple(line.split("|")) for line in r.stdout.splitlines()}, r


def _qos() -> dict[str, tuple[str, str]]:
    """QOS name -> (flags, MaxTRESPerUser) as the database has them."""
    r = run(["sacctmgr", "-n", "-P", "show", "qos", "format=name,flags,maxtrespu"], check=False,
            env=slurm_env())
    return {f[0]: (f[1], f[2]) for line in r.stdout.splitlines() if len(f := line.split("|")) == 3}


def ensure_associations() -> None:
    """Two quick queries when everything exists (the usual warm start); the sacctmgr script
    (about 3 s: one commit per line) only when something is missing."""
    want = {(a, u) for a, users in ACCOUNTS.items() for u in users}

    def complete() -> bool:
        have, _ = _associations()
        qos = _qos()
        pairs = {(a, u) for a, u, *_ in have}
        load_ok = any(a == OTHER_USER and u == OTHER_USER and LOAD_QOS in q.split(",")
                      for a, u, q in have)
        return want <= pairs and load_ok and GPU_QOS in qos and "OverPartQOS" in qos.get(
            LOAD_QOS, ("", ""))[0]

    if complete():
        return
    run(["sacctmgr", "-i"], check=False, env=slurm_env(), input=sacctmgr_script())
    have, r = _associations()
    have = {(a, u) for a, u, *_ in have}
    if not want <= have:
        raise RuntimeError(f"associations missing after sacctmgr: {sorted(want - have)}\n"
                           f"{r.stdout}{r.stderr}\n{tail(P.logs / 'slurmdbd.log')}")


LOAD_LIMIT = 100000  # rvother's own per-type limits: "no limit", overriding the partition QOS


def ensure_gpu_limits() -> None:
    """Set the per-user GPU limits on the partition QOS, and rvother's QOS's own (huge) ones,
    every start (a change of the table reaches a running database).  OverPartQOS only lets a
    job QOS's limits replace the partition QOS's where the job QOS sets them, so rv-load states
    every type.  Only after slurmctld is up: it creates the gres/gpu:<type> TRES in the
    database on its first registration, and sacctmgr rejects unknown TRES."""
    for qos, limits in ((GPU_QOS, GPU_MAX_PER_USER),
                        (LOAD_QOS, {t: LOAD_LIMIT for t in GPU_MAX_PER_USER})):
        per_user = ",".join(f"gres/gpu:{t}={n}" for t, n in limits.items())
        want = set(per_user.split(","))
        if set(_qos().get(qos, ("", ""))[1].split(",")) == want:
            continue
        run(["sacctmgr", "-i", "modify", "qos", qos, "set", f"MaxTRESPerUser={per_user}"],
            check=False, env=slurm_env())
        have = _qos().get(qos, ("", ""))[1]
        if set(have.split(",")) != want:
            raise RuntimeError(f"QOS {qos} limits not set (have {have!r})\n"
                               f"{tail(P.logs / 'slurmdbd.log')}")


def cold() -> bool:
    """Nothing of the Slurm cluster runs (no slurmctld, no slurmd): a fresh start."""
    return not pid_alive(P.ctld_pid, "slurmctld") and not any(
        pid_alive(slurmd_pid_file(n), f"slurmd -N {n}") for n in all_nodes())


def ensure_accounting() -> None:
    """MariaDB, slurmdbd, associations and QOS: all before slurmctld, which needs its partition
    QOS to exist."""
    ensure_mariadb()
    # The job records stay across cold starts (sacct history of the shared cluster; job ids
    # keep counting up after slurmctld -c on this setup, and sacct shows the newest record of a
    # reused id anyway).
    ensure_slurmdbd()
    ensure_associations()


def start_slurm(clear_state: bool) -> None:
    env = slurm_env()
    ctld = pid_alive(P.ctld_pid, "slurmctld")
    if not ctld:
        P.ctld_pid.unlink(missing_ok=True)
        # -c only on a cold start: a fresh controller never resurrects jobs of a previous
        # (killed) cluster.  With slurmds still running (slurmctld died or a fault test is
        # restarting it) the saved state is recovered instead: -c there would reset job ids
        # under running jobs ("Duplicate jobid" drains nodes) and drop everyone's jobs.
        flag = " -c" if clear_state else ""
        args = ["unshare", "--uts", "sh", "-c", f"hostname {CTLD_HOST} && exec slurmctld{flag}"]
        r = run(args, check=False, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"slurmctld failed: {r.stderr}\n{tail(P.logs / 'slurmctld.log')}")
    for node in all_nodes():
        pf = slurmd_pid_file(node)
        if pid_alive(pf, f"slurmd -N {node}"):
            continue
        pf.unlink(missing_ok=True)
        r = run(["unshare", "--uts", "sh", "-c", f"hostname {node} && exec slurmd -N {node}"],
                check=False, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"slurmd {node} failed: {r.stderr}\n{tail(P.logs / f'slurmd-{node}.log')}")
    wait_for(lambda: pid_alive(P.ctld_pid, "slurmctld"), 15, "slurmctld pid file")

    def nodes_up() -> bool:
        r = run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False, env=env)
        if r.returncode != 0:
            return False
        states = {}
        for line in r.stdout.split("\n"):
            if line.strip():
                n, s = line.split()
                states[n] = s
        return len(states) == len(all_nodes()) and all(
            s.rstrip("*~#$@+-").lower() in ("idle", "mixed", "allocated", "completing", "drained",
                                            "draining", "drain")
            for s in states.values())  # drained = registered (a test may drain a node on purpose)

    try:
        wait_for(nodes_up, 30, "all nodes to register", 0.1)
    except RuntimeError as e:
        r = run(["sinfo", "-N"], check=False, env=env)
        raise RuntimeError(f"{e}\n{r.stdout}{r.stderr}\n{tail(P.logs / 'slurmctld.log')}") from None


def free_port(preferred: int) -> int:
    for candidate in (preferred, 0):
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", candidate))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def ensure_sshd(port_hint: int | None) -> tuple[int, int]:
    pid = pid_alive(P.sshd_pid, "sshd")
    if pid and P.sshd_config.exists():
        for line in P.sshd_config.read_text().splitlines():
            if line.startswith("Port "):
                port = int(line.split()[1])
                # Rewrite config (e.g. after a code change) only matters on restart; keep running one.
                return port, pid
    P.sshd_pid.unlink(missing_ok=True)
    if not P.host_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rv-test-cluster-host", "-f", str(P.host_key)])
    os.chmod(P.host_key, 0o600)
    port = free_port(port_hint or 2222)
    write_if_changed(P.sshd_config, sshd_config(port))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    r = run(["/usr/sbin/sshd", "-f", str(P.sshd_config), "-E", str(P.logs / "sshd.log")], check=False)
    if r.returncode != 0:
        raise RuntimeError(f"sshd failed: {r.stderr}\n{tail(P.logs / 'sshd.log')}")
    wait_for(lambda: pid_alive(P.sshd_pid, "sshd"), 10, "sshd pid file")
    pid = pid_alive(P.sshd_pid, "sshd")
    hostpub = Path(str(P.host_key) + ".pub").read_text().split()
    write_if_changed(P.known_hosts, f"[127.0.0.1]:{port} {hostpub[0]} {hostpub[1]}\n")
    assert pid
    return port, pid


def write_info(port: int, sshd_pid: int) -> dict:
    info = {
        "host": "127.0.0.1",
        "port": port,
        "user": USER,
        "identity_file": str(P.id_key),
        "known_hosts": str(P.known_hosts),
        "scratch": str(SCRATCH),
        "other_user": OTHER_USER,
        "slurm_conf": str(P.conf),
        "state_dir": str(STATE),
        "sshd_pid": sshd_pid,
        "accounting": ACCOUNTING,
    }
    write_if_changed(P.info, json.dumps(info, indent=2) + "\n")
    return info


# ---------------------------------------------------------------- stop

def node_namespaces() -> set[str]:
    ns = set()
    for node in all_nodes():
        pid = pid_alive(slurmd_pid_file(node), f"slurmd -N {node}")
        if pid:
            try:
                ns.add(os.readlink(f"/proc/{pid}/ns/uts"))
            except OSError:
                pass
    ctld = pid_alive(P.ctld_pid, "slurmctld")
    if ctld:
        try:
            ns.add(os.readlink(f"/proc/{ctld}/ns/uts"))
        except OSError:
            pass
    ns.discard(os.readlink("/proc/self/ns/uts"))  # never the host's own namespace
    return ns


def pids_in_namespaces(ns: set[str]) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "ns" / "uts") in ns:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


_DAEMONS_BY_ENV = {"slurmctld", "slurmd", "slurmdbd"}
_DAEMONS_BY_ARGV = {"munged", "mariadbd", "sshd"}


def stray_daemons() -> set[int]:
    """This cluster's daemons that lost their pid file (a crashed start, two starts at once, an
    older copy of this script): Slurm daemons whose environment has our SLURM_CONF, and
    munged/mariadbd/sshd whose command line names our state dir.  Nothing else is touched."""
    out: set[int] = set()
    conf = f"SLURM_CONF={P.conf}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            comm = (d / "comm").read_text().strip()
            if comm in _DAEMONS_BY_ENV:
                if conf in (d / "environ").read_bytes().split(b"\0"):
                    out.add(int(d.name))
            elif comm in _DAEMONS_BY_ARGV:
                argv = (d / "cmdline").read_bytes().split(b"\0")
                if any(str(STATE).encode() in a for a in argv):
                    out.add(int(d.name))
        except OSError:
            continue
    return out


def stop() -> None:
    t0 = time.monotonic()
    # Everything a slurmd started (slurmstepd, job processes) lives in that node's UTS namespace.
    ns = node_namespaces()
    daemons = []
    for pf, needle in [(P.ctld_pid, "slurmctld"), (P.sshd_pid, "sshd"), (P.munge_pid, "munged")] + [
        (slurmd_pid_file(n), f"slurmd -N {n}") for n in all_nodes()
    ]:
        pid = pid_alive(pf, needle)
        if pid:
            daemons.append(pid)
    accounting = {pid for pf, needle in ((P.dbd_pid, "slurmdbd"), (P.mysql_pid, "mariadbd"))
                  if (pid := pid_alive(pf, needle))}
    victims = (set(daemons) | set(pids_in_namespaces(ns)) | stray_daemons()) - accounting
    for pid in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and alive(p, "") for p in victims):
        time.sleep(0.05)
    for pid in set(victims) | set(pids_in_namespaces(ns)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pf in [P.ctld_pid, P.sshd_pid, P.munge_pid] + [slurmd_pid_file(n) for n in all_nodes()]:
        pf.unlink(missing_ok=True)
    # Accounting last: slurmdbd, then MariaDB (a clean shutdown, so the next start skips recovery).
    for pf, needle, grace in ((P.dbd_pid, "slurmdbd", 3.0), (P.mysql_pid, "mariadbd", 15.0)):
        pid = pid_alive(pf, needle)
        if not pid:
            continue
        victims.add(pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and alive(pid, needle):
            time.sleep(0.05)
        if alive(pid, needle):
            os.kill(pid, signal.SIGKILL)
        pf.unlink(missing_ok=True)
    log(f"stopped {len(victims)} processes in {time.monotonic() - t0:.2f}s")


# ---------------------------------------------------------------- start / status

def start() -> dict:
    t0 = time.monotonic()
    if os.geteuid() != 0:
        raise SystemExit("tests/cluster/cluster.py start must run as root")
    # a fault test restarting slurmctld (tests/cluster/faults.py) holds this lock during its
    # outage: wait for it, or we would start a state-clearing `slurmctld -c` in its window
    import fcntl

    STATE.mkdir(parents=True, exist_ok=True)
    _fault_lock = open(STATE / "faults.lock", "a")
    fcntl.flock(_fault_lock, fcntl.LOCK_EX)
    tools = ("slurmctld", "slurmd", "munged", "sshd", "sinfo", "unshare") + (
        ("slurmdbd", "mariadbd", "mariadb-install-db", "sacctmgr") if ACCOUNTING else ())
    for tool in tools:
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"missing {tool}: run tests/cluster/install.sh first")
    port_hint = None
    if P.info.exists():
        try:
            port_hint = json.loads(P.info.read_text()).get("port")
        except (OSError, ValueError):
            pass
    changed = prepare_files(port_hint or 2222)
    if changed and (pid_alive(P.ctld_pid, "slurmctld") or any(
            pid_alive(slurmd_pid_file(n), "slurmd") for n in all_nodes())):
        log("slurm.conf changed: restarting the cluster")
        stop()
    elif cold() and stray_daemons() - {
            pid for pf, needle in ((P.dbd_pid, "slurmdbd"), (P.mysql_pid, "mariadbd"),
                                   (P.munge_pid, "munged"), (P.sshd_pid, "sshd"))
            if (pid := pid_alive(pf, needle))}:
        log("daemons of this cluster without pid files: stopping them first")
        stop()
    ensure_hosts()
    ensure_etc_slurm_links()
    ensure_users()
    __import__("module_standin").install(STATE, USER)  # Lmod-like `module` (tests/cluster/module_standin.py)
    ensure_munge()
    fresh = cold()
    if ACCOUNTING:
        ensure_accounting()
    start_slurm(clear_state=fresh)
    if ACCOUNTING:
        ensure_gpu_limits()
    port, sshd_pid = ensure_sshd(port_hint)
    info = write_info(port, sshd_pid)
    log(f"up in {time.monotonic() - t0:.2f}s: ssh -p {port} -i {P.id_key} {USER}@127.0.0.1 "
        f"(SLURM_CONF={P.conf})")
    return info


def status() -> int:
    ok = True
    acct = [(P.mysql_pid, "mariadbd", "mariadb"), (P.dbd_pid, "slurmdbd", "slurmdbd")] if (
        ACCOUNTING) else []
    for pf, needle, name in [(P.munge_pid, "munged", "munged"), *acct, (P.ctld_pid, "slurmctld", "slurmctld"),
                             (P.sshd_pid, "sshd", "sshd")] + [
            (slurmd_pid_file(n), f"slurmd -N {n}", f"slurmd {n}") for n in all_nodes()]:
        pid = pid_alive(pf, needle)
        ok &= bool(pid)
        print(f"{name:24} {'running pid ' + str(pid) if pid else 'NOT running'}")
    return 0 if ok else 1


def lock() -> None:
    """Serialize start/stop/restart across processes (sessions start and stop the shared
    cluster concurrently; a stop in the middle of a start left slurmctld without munged).
    Held until this process exits."""
    import fcntl

    STATE.mkdir(parents=True, exist_ok=True)
    global _LOCK_FD
    _LOCK_FD = os.open(STATE / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(_LOCK_FD, fcntl.LOCK_EX)


_LOCK_FD: int | None = None


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "start"
    if cmd in ("start", "stop", "restart"):
        lock()
    if cmd == "start":
        try:
            info = start()
        except (RuntimeError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", "") or ""
            print(f"[rv-test-cluster] start failed: {e}\n{detail}", file=sys.stderr)
            return 1
        print(json.dumps(info))
        return 0
    if cmd == "stop":
        stop()
        return 0
    if cmd == "restart":
        stop()
        print(json.dumps(start()))
        return 0
    if cmd == "status":
        return status()
    if cmd == "any":  # exit 0 when any daemon of this cluster runs (partly up counts as up)
        return 0 if not cold() or pid_alive(P.munge_pid, "munged") or pid_alive(
            P.sshd_pid, "sshd") else 1
    if cmd == "info":
        print(P.info.read_text())
        return 0
    if cmd == "conf":
        sys.stdout.write(slurm_conf())
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
