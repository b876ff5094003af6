"""The core of ``rv init``: config, SSH key, account discovery, remote directories and caches.

The CLI (``rv_tui.cli.init``) asks the questions; this module does the work, so the TUI's config
pane and tests drive the same steps.  Every step is idempotent: running init again keeps the
existing notification token, re-creates nothing that exists, and leaves cache symlinks alone.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rv_tui.cluster.base import Cluster
from rv_tui.config import Config, ConfigDocument, config_path, generate_token, write_default_config
from rv_tui.errors import RvError
from rv_tui.slurm.site import allocation_accounts as parse_allocations  # names only; one parser
from rv_tui.workspace.caches import CacheLink, ensure_remote_setup, shared_setup_script

COMPUTING_ID_RE = re.compile(r"^[a-z]{2,3}\d[a-z]{2,3}$")
DEFAULT_HOSTNAME = "login.hpc.virginia.edu"
KEY_NAMES = ("id_ed25519", "id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519_sk")


@dataclass
class InitOptions:
    """Answers to the wizard (or the flags of a non-interactive ``rv init``)."""

    user: str
    hostname: str = DEFAULT_HOSTNAME
    host: str | None = None  # ssh alias; defaults to hostname
    port: int | None = None
    identity_file: str | None = None
    account: str | None = None
    hf_cache: str | None = None
    email: str | None = None
    notifications: bool = True
    notify_url: str | None = None  # webhook for HMAC-signed job notifications (optional)
    scratch: str | None = None
    gpu_type: str = "any"
    time: str = "2:59:00"


def validate_user(user: str, *, strict: bool = True) -> str:
    """UVA computing ids look like ``abc1de``; other sites pass ``strict=False``."""
    if strict and not COMPUTING_ID_RE.match(user):
        raise RvError(f"{user!r} does not look like a computing id (e.g. abc1de)",
                      hint="pass --any-user for clusters with other user names")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", user):
        raise RvError(f"{user!r} is not a valid user name")
    return user


def find_ssh_key(ssh_dir: Path | None = None) -> Path | None:
    """The first existing private key (with its .pub) in ~/.ssh."""
    d = ssh_dir or Path.home() / ".ssh"
    for name in KEY_NAMES:
        if (d / name).is_file() and (d / f"{name}.pub").is_file():
            return d / name
    return None


def generate_ssh_key(user: str, ssh_dir: Path | None = None) -> Path:
    d = ssh_dir or Path.home() / ".ssh"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = d / "id_ed25519"
    r = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rv-{user}", "-f", str(key)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RvError(f"ssh-keygen failed: {r.stderr.strip()}")
    return key


def copy_key_command(key: Path, user: str, hostname: str, port: int | None = None) -> list[str]:
    """argv for ``ssh-copy-id`` (interactive: asks for the password and Duo)."""
    argv = ["ssh-copy-id", "-i", f"{key}.pub"]
    if port:
        argv += ["-p", str(port)]
    return argv + [f"{user}@{hostname}"]


async def discover_accounts(cluster: Cluster) -> list[str]:
    """Accounts the user may charge: ``allocations`` where the site has it, else sacctmgr."""
    res = await cluster.exec("if command -v allocations >/dev/null 2>&1; then allocations; else "
                             "sacctmgr -nP show assoc user=\"$(id -un)\" format=account 2>/dev/null; fi")
    if "---" in res.stdout:
        return parse_allocations(res.stdout)
    return sorted({ln.strip() for ln in res.stdout.splitlines()
                   if re.fullmatch(r"[A-Za-z0-9._-]+", ln.strip())})


async def group_storage(cluster: Cluster) -> list[str]:
    """Group directories under /standard or /project (``hdquota``), for a shared HF cache."""
    res = await cluster.exec("hdquota 2>/dev/null || true")
    found = re.findall(r"(/(?:standard|project)/[A-Za-z0-9._-]+)", res.stdout)
    return list(dict.fromkeys(found))


def write_config(opts: InitOptions, *, path: Path | None = None) -> Config:
    """Write config.toml from the answers.

    A fresh file gets rv's commented defaults; an existing (valid) file is *edited*: only the
    answered keys change, so hand edits, comments and the notification token survive re-runs.
    """
    p = path or config_path()
    email = opts.email or (f"{opts.user}@virginia.edu" if opts.notifications else None)
    if not p.exists():
        config = write_default_config(
            opts.user, host=opts.host or opts.hostname, hostname=opts.hostname, port=opts.port,
            identity_file=opts.identity_file, account=opts.account, gpu_type=opts.gpu_type,
            time=opts.time, scratch=opts.scratch, notifications=opts.notifications,
            email=email, token=generate_token(), hf_cache=opts.hf_cache, path=p)
        if not opts.notify_url:
            return config
    doc = ConfigDocument.load(p)
    values = {
        "connection.host": opts.host or opts.hostname, "connection.user": opts.user,
        "connection.hostname": opts.hostname, "connection.port": opts.port,
        "connection.identity_file": opts.identity_file, "defaults.account": opts.account,
        "paths.scratch": opts.scratch,
        "notifications.enabled": opts.notifications, "notifications.email": email,
        "notifications.url": opts.notify_url,
        "shared.hf_cache": opts.hf_cache,
    }
    for key, value in values.items():
        if value is not None:
            doc.set(key, value)
    if not doc.get("notifications.token"):
        doc.set("notifications.token", generate_token())
    return doc.save()


async def prepare_shared_hf(cluster: Cluster, path: str) -> None:
    """Create the shared HuggingFace cache if missing (2775, setgid so the group keeps ownership).

    An existing directory is the group's: its mode is never changed (a chmod would fail for a
    directory a colleague created, and would undo the group's own choice); it only has to be
    writable by us.
    """
    res = await cluster.exec(shared_setup_script(path))
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RVSHARED ")), "")
    if line != "RVSHARED ok":
        why = line.removeprefix("RVSHARED failed ").strip() or res.stderr.strip()[-300:]
        raise RvError(f"cannot use the shared cache {path}: {why}",
                      hint="ask the group's storage owner, or unset shared.hf_cache")


async def remote_setup(cluster: Cluster, config: Config) -> list[CacheLink]:
    """Directories + cache symlinks (idempotent)."""
    if config.shared.hf_cache:
        await prepare_shared_hf(cluster, config.shared.hf_cache)
    return await ensure_remote_setup(cluster, hf_cache=config.shared.hf_cache)
