"""Incremental push of a project into its remote ``code/`` directory, over any :class:`Cluster`.

Why not rsync: the original's ``rsync --files-from --delete`` left deleted files behind, ignored
``.rvignore`` for git projects, and its dry run previewed a different file set.  Here one function
(:func:`compute_plan`) decides what travels, for the dry run and the real push alike:

1. list the local files (git: tracked + untracked-not-ignored; else a walk honouring
   ``.gitignore``/``.rvignore``), then drop ``.rvignore`` matches and the default excludes;
2. fetch the remote manifest in one command (``find -printf``: type, size, mtime, path);
3. upload = missing remotely, different size/mtime, or changed locally since the last push (a
   per-target state file in ``rv_home()`` catches same-second, same-size edits);
   delete = present remotely, absent locally.

The changed files travel as tar archives (written with ``Cluster.write_file``) and one remote
script extracts them into a staging directory and hard-links them into ``code/`` with
``cp -al --remove-destination``: every changed path gets a *new inode*, so the hard-linked job
snapshots (``cp -al`` of ``code/``) never see a later push.  Typically three round trips.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rv_tui.cluster.base import Cluster
from rv_tui.config import rv_home
from rv_tui.errors import RvError
from rv_tui.fsutil import atomic_write
from rv_tui.quoting import q
from rv_tui.workspace.ignore import IgnoreMatcher

CHUNK_BYTES = 8 * 1024 * 1024
Progress = Callable[[int, int], None]


class SyncError(RvError):
    """A push or pull that failed on the cluster."""


@dataclass(frozen=True)
class LocalFile:
    rel: str
    size: int
    mtime_ns: int
    is_link: bool = False

    @property
    def mtime_s(self) -> int:
        return self.mtime_ns // 1_000_000_000


@dataclass(frozen=True)
class RemoteFile:
    rel: str
    size: int
    mtime_s: int
    kind: str  # "f" file, "l" symlink


@dataclass
class SyncPlan:
    """What a push will do.  The dry run prints this; the real push executes exactly this."""

    root: Path
    code_dir: str
    upload: list[LocalFile] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: int = 0
    local: dict[str, LocalFile] = field(default_factory=dict)
    #: local paths not sent because the remote place holds something rv keeps (see compute_plan)
    conflicts: list[str] = field(default_factory=list)
    #: remote directories a local file or symlink replaces (empty once the deletes ran)
    replace_dirs: list[str] = field(default_factory=list)
    #: what rv had synced before this push (None: never, or by a version without the list)
    previous_synced: set[str] | None = None

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.upload)

    @property
    def empty(self) -> bool:
        return not self.upload and not self.delete

    def summary(self) -> str:
        text = (f"{len(self.upload)} to upload ({_human(self.upload_bytes)}), "
                f"{len(self.delete)} to delete, {self.unchanged} unchanged")
        if self.conflicts:
            text += f", {len(self.conflicts)} not sent (remote path holds files rv keeps)"
        return text

    def to_json(self) -> dict[str, object]:
        return {"code_dir": self.code_dir, "upload": [f.rel for f in self.upload],
                "delete": list(self.delete), "unchanged": self.unchanged,
                "upload_bytes": self.upload_bytes, "conflicts": list(self.conflicts)}


@dataclass(frozen=True)
class SyncResult:
    plan: SyncPlan
    dry_run: bool
    round_trips: int
    bytes_sent: int
    seconds: float


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ----------------------------------------------------------------------------- local listing

def _stat_entry(root: Path, rel: str) -> LocalFile | None:
    try:
        st = os.lstat(root / rel)
    except OSError:
        return None  # tracked but deleted locally
    if stat.S_ISREG(st.st_mode):
        return LocalFile(rel, st.st_size, st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        return LocalFile(rel, st.st_size, st.st_mtime_ns, is_link=True)
    return None  # directories (submodules), sockets, fifos


def _git_files(root: Path) -> list[str] | None:
    try:
        r = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    names = r.stdout.decode("utf-8", "surrogateescape").split("\0")
    return sorted({n for n in names if n})


def _walk_files(root: Path) -> list[str]:
    """Without git: walk, applying .gitignore/.rvignore files as they are found."""
    matcher = IgnoreMatcher.with_defaults()
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel_dir = d.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in (".gitignore", ".rvignore"):
            if name in filenames:
                matcher.add_file(root, d / name)
        keep = []
        for dn in sorted(dirnames):
            rel = f"{rel_dir}/{dn}" if rel_dir else dn
            if not matcher.ignored(rel, is_dir=True) and not os.path.islink(d / dn):
                keep.append(dn)
            elif os.path.islink(d / dn) and not matcher.ignored(rel):
                filenames.append(dn)  # a symlink to a directory travels as a link
        dirnames[:] = keep
        for fn in filenames:
            rel = f"{rel_dir}/{fn}" if rel_dir else fn
            if not matcher.ignored(rel):
                out.append(rel)
    return sorted(out)


def list_local_files(root: Path) -> dict[str, LocalFile]:
    """The files a push sends, by posix path relative to ``root``."""
    root = root.resolve()
    names = _git_files(root) if (root / ".git").exists() else None
    if names is None:
        names = _walk_files(root)
    else:
        matcher = IgnoreMatcher.with_defaults()
        for n in names:
            if n == ".rvignore" or n.endswith("/.rvignore"):
                matcher.add_file(root, root / n)
        names = [n for n in names if not matcher.ignored(n)]
    out: dict[str, LocalFile] = {}
    for n in names:
        entry = _stat_entry(root, n)
        if entry is not None:
            out[n] = entry
    return out


# ----------------------------------------------------------------------------- remote manifest

MANIFEST_MARK = "RVMANIFEST"
SYNCED_MARK = "RVSYNCED"


def synced_list_path(code_dir: str) -> str:
    """Where the list of paths rv synced into ``code_dir`` lives (next to it, outside snapshots)."""
    parent, name = code_dir.rstrip("/").rsplit("/", 1)
    return f"{parent}/.rv-synced-{name}"


def manifest_command(code_dir: str, *, create: bool) -> str:
    """One command printing every entry under ``code_dir`` and the list rv synced there.

    Output (NUL separated): ``RVMANIFEST``, then ``type size mtime path`` for every file,
    symlink and directory, then -- only if rv has synced there before -- ``RVSYNCED`` and the
    synced paths.  Directories rv creates are 0700 (``umask 077``).
    """
    lst = q(synced_list_path(code_dir))
    find = (f"cd {q(code_dir)} && printf '{MANIFEST_MARK}\\0' && find . -mindepth 1 "
            "\\( -type f -o -type l -o -type d \\) -printf '%y %s %T@ %P\\0' && "
            f"if [ -f {lst} ]; then printf '{SYNCED_MARK}\\0' && cat {lst}; fi")
    if create:
        return f"(umask 077 && mkdir -p {q(code_dir)}) && {find}"
    return f"if [ -d {q(code_dir)} ]; then {find}; else printf '{MANIFEST_MARK}\\0'; fi"


def parse_manifest_full(out: str) -> tuple[dict[str, RemoteFile], set[str], set[str] | None]:
    """(files and symlinks, directories, the synced list or None if rv never wrote one)."""
    files: dict[str, RemoteFile] = {}
    dirs: set[str] = set()
    records = out.split("\0")
    if MANIFEST_MARK in records:
        records = records[records.index(MANIFEST_MARK) + 1:]
    synced: set[str] | None = None
    for i, rec in enumerate(records):
        if rec == SYNCED_MARK:
            synced = {r for r in records[i + 1:] if r}
            break
        if not rec:
            continue
        kind, size, mtime, rel = rec.split(" ", 3)
        if kind == "d":
            dirs.add(rel)
        else:
            files[rel] = RemoteFile(rel, int(size), int(float(mtime)), kind)
    return files, dirs, synced


def parse_manifest(out: str) -> dict[str, RemoteFile]:
    return parse_manifest_full(out)[0]


@dataclass(frozen=True)
class RemoteState:
    files: dict[str, RemoteFile]
    dirs: set[str]
    synced: set[str] | None


async def fetch_remote(cluster: Cluster, code_dir: str, *, create: bool) -> RemoteState:
    res = await cluster.exec(manifest_command(code_dir, create=create), timeout=300)
    if not res.ok:
        raise SyncError(f"could not list {code_dir} on the cluster: {res.stderr.strip()[-300:]}")
    return RemoteState(*parse_manifest_full(res.stdout))


async def fetch_manifest(cluster: Cluster, code_dir: str, *, create: bool) -> dict[str, RemoteFile]:
    return (await fetch_remote(cluster, code_dir, create=create)).files


# ----------------------------------------------------------------------------- the plan

def _state_path(cluster: Cluster, code_dir: str) -> Path:
    key = hashlib.sha1(f"{cluster.name}\0{cluster.user}\0{code_dir}".encode()).hexdigest()[:16]
    return rv_home() / "sync" / f"{key}.json"


def load_state(cluster: Cluster, code_dir: str) -> dict[str, tuple[int, int]]:
    try:
        raw = json.loads(_state_path(cluster, code_dir).read_text())
        return {k: (int(v[0]), int(v[1])) for k, v in raw.get("files", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        return {}


def save_state(cluster: Cluster, code_dir: str, local: dict[str, LocalFile]) -> None:
    data = {"code_dir": code_dir, "files": {k: [f.size, f.mtime_ns] for k, f in local.items()}}
    atomic_write(_state_path(cluster, code_dir), json.dumps(data), mode=0o600)


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _git_ignored(root: Path, rels: list[str]) -> set[str]:
    """Which of ``rels`` git ignores (``.gitignore``, info/exclude, global excludes)."""
    if not rels or not (root / ".git").exists():
        return set()
    try:
        r = subprocess.run(["git", "-C", str(root), "check-ignore", "-z", "--no-index", "--stdin"],
                           input="\0".join(rels).encode("utf-8", "surrogateescape") + b"\0",
                           capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return set(rels)  # cannot tell: keep them all (never delete what we cannot vouch for)
    if r.returncode not in (0, 1):
        return set(rels)
    return {n for n in r.stdout.decode("utf-8", "surrogateescape").split("\0") if n}


def excluded_paths(root: Path, rels: list[str]) -> set[str]:
    """Which of ``rels`` the local ignore rules exclude now (rv defaults, .rvignore, .gitignore)."""
    if not rels:
        return set()
    matcher = IgnoreMatcher.with_defaults()
    git_mode = (root / ".git").exists()
    names = (".rvignore",) if git_mode else (".rvignore", ".gitignore")
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel_dir = d.relative_to(root).as_posix()
        for name in names:
            if name in filenames:
                matcher.add_file(root, d / name)
        dirnames[:] = sorted(dn for dn in dirnames if dn != ".git" and not matcher.ignored(
            dn if rel_dir == "." else f"{rel_dir}/{dn}", is_dir=True))
    out = {r for r in rels if matcher.ignored(r)}

    def through_non_dir(rel: str) -> bool:  # git refuses paths "beyond a symbolic link"
        for parent in _parents(rel):
            p = root / parent
            if p.is_symlink() or (p.exists() and not p.is_dir()):
                return True
        return False

    return out | _git_ignored(root, [r for r in rels if r not in out and not through_non_dir(r)])


def compute_plan(root: Path, code_dir: str, local: dict[str, LocalFile],
                 remote: dict[str, RemoteFile], pushed: dict[str, tuple[int, int]], *,
                 synced: set[str] | None = None, remote_dirs: set[str] | None = None,
                 excluded: Callable[[list[str]], set[str]] | None = None) -> SyncPlan:
    """Decide uploads and deletes (pure but for ``excluded``: the dry run and the push share it).

    The rule (rsync without ``--delete-excluded``): a remote path is deleted only if rv synced
    it before (``synced``, else the local state's keys), it is gone locally, and the local
    ignore rules do not exclude it.  Everything else remotely -- ignored folders, weights the
    default excludes keep local, files a job wrote -- stays.  A local path whose remote place
    is taken by something rv must keep (a kept file as its parent, a directory holding kept
    files) is reported in ``conflicts`` and not sent, so one odd path never wedges the push.
    """
    remote_dirs = remote_dirs or set()
    previous = set(pushed) if synced is None else set(synced)
    plan = SyncPlan(root=root, code_dir=code_dir, local=local)
    candidates = sorted(r for r in remote if r in previous and r not in local)
    keep = excluded(candidates) if (excluded and candidates) else set()
    plan.delete = [r for r in candidates if r not in keep]
    deleted = set(plan.delete)
    kept_files = {r for r in remote if r not in deleted}
    kept_under: set[str] = set()  # directories that still hold a kept file after the deletes
    for r in kept_files:
        kept_under.update(_parents(r))
    for rel, lf in sorted(local.items()):
        if any(p in kept_files for p in _parents(rel)) or rel in kept_under:
            plan.conflicts.append(rel)
            continue
        rf = remote.get(rel)
        last = pushed.get(rel)
        same_remote = (rf is not None and rf.size == lf.size and rf.mtime_s == lf.mtime_s
                       and (rf.kind == "l") == lf.is_link)
        changed_locally = last is not None and last != (lf.size, lf.mtime_ns)
        if same_remote and not changed_locally:
            plan.unchanged += 1
        else:
            plan.upload.append(lf)
            if rel in remote_dirs:
                plan.replace_dirs.append(rel)
    return plan


async def plan_push(cluster: Cluster, root: Path, code_dir: str, *, create: bool = False) -> SyncPlan:
    root = root.resolve()
    local = list_local_files(root)
    remote = await fetch_remote(cluster, code_dir, create=create)
    plan = compute_plan(root, code_dir, local, remote.files, load_state(cluster, code_dir),
                        synced=remote.synced, remote_dirs=remote.dirs,
                        excluded=lambda rels: excluded_paths(root, rels))
    plan.previous_synced = remote.synced
    return plan


# ----------------------------------------------------------------------------- the transfer

def _nul_list(names: list[str] | set[str]) -> bytes:
    return "".join(n + "\0" for n in sorted(names)).encode("utf-8", "surrogateescape")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _tar_chunks(plan: SyncPlan, limit: int = CHUNK_BYTES) -> list[bytes]:
    """The upload as tar archives of about ``limit`` bytes; the last holds the lists."""
    chunks: list[bytes] = []
    buf = io.BytesIO()
    tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
    for lf in plan.upload:
        path = plan.root / lf.rel
        info = tar.gettarinfo(str(path), arcname="f/" + lf.rel)
        info.mtime = lf.mtime_s
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if info.isreg():
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
        else:
            tar.addfile(info)
        if buf.tell() >= limit:
            tar.close()
            chunks.append(buf.getvalue())
            buf = io.BytesIO()
            tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
    synced_now = set(plan.local) - set(plan.conflicts)
    previous = set(plan.previous_synced or ())
    _add_bytes(tar, "rv-delete.lst", _nul_list(plan.delete))
    _add_bytes(tar, "rv-replace.lst", _nul_list(plan.replace_dirs))
    # the synced list changes by a delta (a one-file push must not resend 5,000 names)
    _add_bytes(tar, "rv-synced-add.lst", _nul_list(synced_now - previous))
    _add_bytes(tar, "rv-synced-del.lst", _nul_list(previous - synced_now))
    tar.close()
    chunks.append(buf.getvalue())
    return chunks


def apply_command(workspace: str, code_dir: str, stage: str, tars: list[str], *, prune_dirs: bool,
                  synced_list: str | None = None) -> str:
    """Extract into ``stage``, delete, replace, hard-link into ``code_dir`` (new inodes), record.

    Order matters for type changes: deleted files and symlinks go first (and the directories
    they leave empty), then directories a local file or symlink replaces (empty by then: the
    plan never replaces a directory holding files rv keeps), then ``cp -al``.
    """
    lst = q(synced_list or synced_list_path(code_dir))
    st = q(stage)
    parts = [f"set -e; umask 077; mkdir -p {st} {q(code_dir)}"]
    for t in tars:
        parts.append(f"tar --no-same-owner -xf {q(t)} -C {st}")
    add, rm = q(stage + "/rv-synced-add.lst"), q(stage + "/rv-synced-del.lst")
    # first old + added (a failed apply forgets nothing it may have written), at the end minus removed
    parts.append(f"touch {lst} && LC_ALL=C sort -zu {lst} {add} > {lst}.tmp && mv -f {lst}.tmp {lst}")
    parts.append(f"cd {q(code_dir)}")
    parts.append(f"xargs -0 -r rm -f -- < {q(stage + '/rv-delete.lst')}")
    if prune_dirs:
        # the directories the deletes left empty (never other empty directories: a job may own them)
        parts.append("xargs -0 -r sh -c 'for f; do d=${f%/*}; [ \"$d\" = \"$f\" ] || "
                     "rmdir -p --ignore-fail-on-non-empty -- \"$d\" 2>/dev/null || :; done' rv "
                     f"< {q(stage + '/rv-delete.lst')}")
    parts.append("xargs -0 -r sh -c 'for d; do [ -L \"./$d\" ] || [ ! -d \"./$d\" ] || "
                 f"find \"./$d\" -depth -type d -empty -delete; done' rv < {q(stage + '/rv-replace.lst')}")
    parts.append(f"if [ -d {q(stage + '/f')} ]; then cp -al --remove-destination "
                 f"{q(stage + '/f/.')} {q(code_dir + '/')}; fi")
    parts.append(f"LC_ALL=C sort -zu {rm} > {rm}.s && LC_ALL=C comm -z -23 {lst} {rm}.s > {lst}.tmp && "
                 f"mv -f {lst}.tmp {lst}")
    parts.append(f"rm -rf {st} " + " ".join(q(t) for t in tars))
    return "; ".join(parts)


async def execute_plan(cluster: Cluster, plan: SyncPlan, *, progress: Progress | None = None) -> tuple[int, int]:
    """Send the plan's changes; returns (round trips, bytes sent)."""
    synced_now = set(plan.local) - set(plan.conflicts)
    if plan.empty and plan.previous_synced == synced_now:
        return 0, 0
    workspace = plan.code_dir.rsplit("/", 1)[0]
    token = secrets.token_hex(6)
    stage = f"{workspace}/.rv-staging-{token}"
    chunks = _tar_chunks(plan)
    total = sum(len(c) for c in chunks)
    sent = 0
    tars: list[str] = []
    try:
        for i, data in enumerate(chunks):
            path = f"{stage}.{i}.tar"
            tars.append(path)
            await cluster.write_file(path, data, mode=0o600)
            sent += len(data)
            if progress:
                progress(sent, total)
    except Exception as exc:  # a full scratch, a lost connection: leave no partial tars behind
        try:
            await cluster.exec("rm -f " + " ".join(q(t) for t in tars))
        except Exception:
            pass
        raise SyncError(f"uploading the changes to {workspace} failed: {exc}",
                        hint="check free space/quota on scratch (rv exec df -h ~)") from exc
    res = await cluster.exec(apply_command(workspace, plan.code_dir, stage, tars,
                                           prune_dirs=bool(plan.delete)), timeout=600)
    if not res.ok:
        await cluster.exec(f"rm -rf {q(stage)} " + " ".join(q(t) for t in tars))
        raise SyncError(f"applying the sync to {plan.code_dir} failed: {res.stderr.strip()[-400:]}",
                        hint="check free space/quota on scratch (rv exec df -h ~)")
    return len(chunks) + 1, sent


async def push(cluster: Cluster, root: str | Path, code_dir: str, *, dry_run: bool = False,
               progress: Progress | None = None) -> SyncResult:
    """Make ``code_dir`` hold the local file set of ``root`` (or, dry run, say what would change).

    Remote paths rv did not sync, or that local ignore rules now exclude, are never deleted.
    """
    started = time.monotonic()
    root = Path(root).resolve()
    if cluster.is_demo:
        # the simulated cluster has no shell to untar into: show the plan against an empty code/
        plan = compute_plan(root, code_dir, list_local_files(root), {}, {})
        return SyncResult(plan, dry_run, 0, 0, time.monotonic() - started)
    plan = await plan_push(cluster, root, code_dir, create=not dry_run)
    if dry_run:
        return SyncResult(plan, True, 1, 0, time.monotonic() - started)
    trips, sent = await execute_plan(cluster, plan, progress=progress)
    save_state(cluster, code_dir, {k: v for k, v in plan.local.items() if k not in set(plan.conflicts)})
    return SyncResult(plan, False, 1 + trips, sent, time.monotonic() - started)


# ----------------------------------------------------------------------------- pull

async def pull(cluster: Cluster, remote_path: str, local_dest: str | Path, *, base: str | None = None) -> list[str]:
    """Copy a remote file or directory (absolute, or relative to ``base``) into ``local_dest``."""
    path = remote_path if remote_path.startswith("/") or base is None else f"{base}/{remote_path}"
    parent, name = path.rstrip("/").rsplit("/", 1)
    tmp = f"{cluster.scratch}/.rv/pull-{secrets.token_hex(6)}.tar.gz"
    res = await cluster.exec(f"mkdir -p {q(cluster.scratch + '/.rv')} && "
                             f"tar -czf {q(tmp)} -C {q(parent or '/')} -- {q(name)}", timeout=600)
    import tempfile

    from rv_tui.fsutil import download_to

    # the tarball is streamed to a private local temp file and extracted from disk: a pull of
    # many GB never sits in memory (it did: read_file + BytesIO)
    with tempfile.TemporaryDirectory(prefix="rv-pull-") as local_tmp:
        archive = Path(local_tmp) / "pull.tar.gz"
        try:
            if not res.ok:
                raise SyncError(f"cannot pull {path}: {res.stderr.strip()[-300:]}")
            await download_to(cluster, tmp, archive)
        finally:
            await cluster.exec(f"rm -f {q(tmp)}")
        dest = Path(local_dest)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, mode="r:gz") as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
            tar.extractall(dest, filter="data")
    return names
