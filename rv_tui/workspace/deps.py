"""Per-project, per-branch venvs with a two-phase install, over any :class:`Cluster`.

Why two phases: the login node has no GPU, so packages that compile CUDA code (flash-attn,
auto-gptq, ...) fail there.  Phase 1 installs everything on the login node; what fails is written
to ``<venv>/.rv-phase2.txt`` and phase 2 (:func:`phase2_snippet`, run inside the job, under the
same lock) installs it on the compute node once and deletes the file.

Fixes over the original: the hash covers the resolved requirement list and index options (not
just one file's bytes); nested ``-r`` files are expanded locally and ``--index-url``/
``--find-links`` lines are kept as options for every per-package retry (the original's
line-by-line fallback broke them); a lock (``flock``, or ``mkdir`` where flock is missing) stops
two launches installing into one venv; pyproject projects get their *dependencies* installed and
the project itself is put on ``PYTHONPATH`` from the job's snapshot, instead of an editable
install that points at the mutable ``code/`` directory.  uv is used when the cluster has it
(``uv pip install``, never ``uv sync``), else ``python3 -m venv`` + pip.

The venv is created with the cluster's Python: the module system's (``module load`` of
:data:`PYTHON_MODULE`, the one the job templates load too) when the login node has one, else the
login shell's ``python3``; a venv whose Python no longer matches (major.minor) is re-created.
The requirements never appear on a command line (``ps`` on a login node shows every user's):
they are uploaded as a 0600 file and installed with ``-r``, also for the per-package retry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.masking import mask_secrets
from rv_tui.paths import RemotePaths
from rv_tui.quoting import q

PHASE2_FILE = ".rv-phase2.txt"
HASH_FILE = ".rv-deps-hash"
#: requirement-file options that take a value and are passed on to every install
_VALUE_OPTS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--trusted-host",
               "--constraint", "-c", "--only-binary", "--no-binary")
_FLAG_OPTS = ("--no-index", "--pre", "--prefer-binary")


class DepsError(RvError):
    """The venv could not be created or the dependency file cannot be read."""


@dataclass(frozen=True)
class DepsSpec:
    """What to install: from ``requirements.txt`` or ``pyproject.toml`` (resolved locally)."""

    kind: str  # "requirements" | "pyproject"
    file: str  # relative to the project root
    options: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    local_paths: tuple[str, ...] = ()  # editable/local project entries, served via PYTHONPATH
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def hash(self) -> str:
        data = {"v": 1, "kind": self.kind, "options": self.options, "reqs": self.requirements}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _is_local_path(req: str) -> bool:
    return req in (".", "..") or req.startswith(("./", "../", "/", "file:"))


def parse_requirements(path: Path, root: Path, _seen: set[Path] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(options, requirements, local paths) of a requirements file, ``-r`` includes expanded."""
    seen = _seen if _seen is not None else set()
    path = path.resolve()
    if path in seen:
        return [], [], []
    seen.add(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DepsError(f"cannot read {path}: {exc.strerror}") from exc
    options: list[str] = []
    reqs: list[str] = []
    local: list[str] = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        if not words:
            continue
        head = words[0]
        if head in ("-r", "--requirement") or head.startswith(("-r", "--requirement=")):
            if head in ("-r", "--requirement"):
                target = words[1] if len(words) > 1 else ""
            elif head.startswith("--requirement="):
                target = head.split("=", 1)[1]
            else:
                target = head[2:]
            o, r, lp = parse_requirements(path.parent / target, root, seen)
            options += o
            reqs += r
            local += lp
        elif head in ("-e", "--editable") or head.startswith("--editable="):
            target = words[1] if len(words) > 1 else head.split("=", 1)[-1]
            if _is_local_path(target):
                local.append(target)
            else:
                reqs.append(target)
        elif head.startswith("-"):
            name = head.split("=", 1)[0]
            if name in _VALUE_OPTS:
                pair = words[:2] if "=" not in head else [name, head.split("=", 1)[1]]
                if pair not in [options[i:i + 2] for i in range(len(options))]:
                    options += pair
            elif name in _FLAG_OPTS and head not in options:
                options += words
        elif _is_local_path(line):
            local.append(line)
        else:
            reqs.append(line)
    return options, reqs, local


def detect_deps(root: Path) -> DepsSpec | None:
    """``requirements.txt`` first, else ``pyproject.toml`` ``[project].dependencies``."""
    req = root / "requirements.txt"
    if req.is_file():
        options, reqs, local = parse_requirements(req, root)
        return DepsSpec("requirements", "requirements.txt", tuple(options), tuple(reqs), tuple(local))
    pp = root / "pyproject.toml"
    if pp.is_file():
        try:
            data = tomllib.loads(pp.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DepsError(f"cannot parse {pp}: {exc}") from exc
        project = data.get("project") or {}
        deps = [str(d) for d in project.get("dependencies") or []]
        notes = () if project else ("pyproject.toml has no [project] table: nothing to install",)
        return DepsSpec("pyproject", "pyproject.toml", (), tuple(deps), (".",), notes)
    return None


def lock_path(venv: str) -> str:
    return venv.rstrip("/") + ".lock"


def _common(venv: str, scratch: str) -> str:
    """Shell shared by phase 1 and 2: cache dirs, uv detection, ``inst`` and the lock."""
    paths = RemotePaths(scratch)
    lock = lock_path(venv)
    return f"""V={q(venv)}; L={q(lock)}
export UV_CACHE_DIR={q(paths.cache_dir('uv'))} PIP_CACHE_DIR={q(paths.cache_dir('pip'))}
export UV_LINK_MODE=copy PIP_DISABLE_PIP_VERSION_CHECK=1
UV=$(command -v uv 2>/dev/null || true); [ -z "$UV" ] && [ -x "$HOME/.local/bin/uv" ] && UV="$HOME/.local/bin/uv"
inst() {{ if [ -n "$UV" ]; then "$UV" pip install --python "$V/bin/python" "$@"; else "$V/bin/python" -m pip install "$@"; fi; }}
mkdir -p "$(dirname "$V")"
RVMKLOCK=""
if command -v flock >/dev/null 2>&1; then
  exec 9>"$L"; flock -w 3600 9 || {{ echo "RVDEPS:LOCKTIMEOUT"; exit 75; }}
else
  n=0; while ! mkdir "$L.d" 2>/dev/null; do n=$((n+1)); [ $n -gt 3600 ] && {{ echo "RVDEPS:LOCKTIMEOUT"; exit 75; }}; sleep 1; done
  RVMKLOCK=1; trap 'rmdir "$L.d"' EXIT
fi
"""


#: the module that provides the cluster's Python (Rivanna: miniforge); the job templates load
#: the same one (``rv_tui.jobs.templates.DEFAULT_MODULES``), so venv and job agree
PYTHON_MODULE = "miniforge/24.11.3-py3.12"
#: Lmod / environment-modules init files tried when ``module`` is not already a shell function
MODULE_INITS = ("/etc/profile.d/lmod.sh", "/etc/profile.d/modules.sh", "${LMOD_PKG:-/nonexistent}/init/bash",
                "${MODULESHOME:-/nonexistent}/init/bash", "/usr/share/lmod/lmod/init/bash")


def python_setup(module: str = PYTHON_MODULE) -> str:
    """Shell that finds the cluster's Python: loads ``module`` through the module system when the
    cluster has one (sourcing an Lmod init file if ``module`` is not defined yet), then sets
    ``PY`` to ``python3``'s absolute path and ``PYV`` to its version; prints ``RVDEPS:PYTHON``."""
    inits = " ".join(f'"{i}"' if i.startswith("$") else q(i) for i in MODULE_INITS)
    return f"""RVMOD=-
if ! type module >/dev/null 2>&1 && [ -n "${{BASH_VERSION:-}}" ]; then
  set +u
  for _f in {inits}; do
    if [ -r "$_f" ]; then . "$_f" >/dev/null 2>&1; type module >/dev/null 2>&1 && break; fi
  done
  set -u
fi
if type module >/dev/null 2>&1; then
  set +u
  if module load {q(module)} >/dev/null 2>&1; then RVMOD={q(module)}; else echo RVDEPS:NOMODULE; fi
  set -u
fi
PY=$(command -v python3 2>/dev/null || true)
PYV=""
[ -n "$PY" ] && PYV=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)
echo "RVDEPS:PYTHON ${{PYV:-?}} $RVMOD $PY"
"""


_VENV_VERSION = """VV=""
[ -x "$V/bin/python" ] && VV=$("$V/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)
"""


def requirements_text(spec: DepsSpec, code_dir: str) -> str:
    """The requirements file rv uploads (0600) and installs with ``-r``: option lines first
    (relative ``--find-links``/``-c`` paths made absolute under ``code_dir``), then one
    requirement per line.  Credentials in index URLs or ``git+https://TOKEN@`` lines stay in
    this file; they never become words of a command line."""
    return "".join(f"{line}\n" for line in _option_lines(spec.options, code_dir)) + \
        "".join(f"{r}\n" for r in spec.requirements)


def install_script(spec: DepsSpec, venv: str, code_dir: str, scratch: str, req_file: str) -> str:
    """Phase 1 on the login node; prints ``RVDEPS:`` status lines for :func:`ensure_venv`.

    Everything to install is read from ``req_file`` (uploaded 0600 by :func:`ensure_venv`, removed
    at the end); the script itself holds only paths, counts and the hash, so nothing secret shows
    in ``ps`` on the login node.  The venv is created with the cluster's Python
    (:func:`python_setup`) and re-created when its Python version no longer matches.
    """
    nopt = len(_option_lines(spec.options, code_dir))
    nreq = len(spec.requirements)
    return f"""set -u
umask 077
R={q(req_file)}
trap 'rm -f -- "$R" "$R.opts" "$R.one"' EXIT
{python_setup()}[ -n "$PY" ] && [ -n "$PYV" ] || {{ echo RVDEPS:NOPYTHON; exit 1; }}
{_common(venv, scratch)}trap 'rm -f -- "$R" "$R.opts" "$R.one"; [ -z "$RVMKLOCK" ] || rmdir "$L.d"' EXIT
{_VENV_VERSION}if [ -n "$VV" ] && [ "${{VV%.*}}" != "${{PYV%.*}}" ]; then
  echo "RVDEPS:RECREATE $VV"; rm -rf -- "$V"
elif [ -z "$VV" ] && [ -e "$V" ]; then
  echo "RVDEPS:RECREATE broken"; rm -rf -- "$V"
fi
if [ -f "$V/{HASH_FILE}" ] && [ "$(cat "$V/{HASH_FILE}")" = {q(spec.hash)} ] && [ -x "$V/bin/python" ]; then
  echo RVDEPS:UPTODATE; exit 0
fi
if [ ! -x "$V/bin/python" ]; then
  if [ -n "$UV" ]; then "$UV" venv --seed --python "$PY" "$V" >&2; else "$PY" -m venv "$V" >&2; fi || {{ echo RVDEPS:VENVFAIL; exit 1; }}
  echo RVDEPS:CREATED
fi
cd {q(code_dir)} || {{ echo RVDEPS:NOCODE; exit 1; }}
[ -r "$R" ] || {{ echo RVDEPS:NOREQS; exit 1; }}
rm -f "$V/{PHASE2_FILE}" "$V/{PHASE2_FILE}.tmp"
if [ {nreq} -gt 0 ]; then
 if inst -r "$R" >&2; then :; else
  head -n {nopt} "$R" > "$R.opts"
  i=0
  tail -n +{nopt + 1} "$R" | while IFS= read -r _req; do
    {{ cat "$R.opts"; printf '%s\n' "$_req"; }} > "$R.one"
    inst -r "$R.one" >&2 </dev/null || {{ echo "RVDEPS:DEFER $i"; printf '%s\n' "$_req" >> "$V/{PHASE2_FILE}.tmp"; }}
    i=$((i + 1))
  done
 fi
fi
if [ -f "$V/{PHASE2_FILE}.tmp" ]; then
  {{ head -n {nopt} "$R"; cat "$V/{PHASE2_FILE}.tmp"; }} > "$V/{PHASE2_FILE}" && rm -f "$V/{PHASE2_FILE}.tmp"
fi
printf '%s' {q(spec.hash)} > "$V/{HASH_FILE}"
echo RVDEPS:DONE
"""


def _option_lines(options: tuple[str, ...], code_dir: str | None = None) -> list[str]:
    """Options re-rendered as requirements-file lines (one option with its value per line);
    with ``code_dir``, relative local ``--find-links``/``--constraint`` paths become absolute."""
    lines: list[str] = []
    i = 0
    while i < len(options):
        o = options[i]
        if o.split("=", 1)[0] in _VALUE_OPTS and "=" not in o and i + 1 < len(options):
            value = options[i + 1]
            if code_dir and o in ("--find-links", "-f", "--constraint", "-c") and "://" not in value \
                    and not value.startswith("/"):
                value = f"{code_dir.rstrip('/')}/{value}"
            lines.append(f"{o} {value}")
            i += 2
        else:
            lines.append(o)
            i += 1
    return lines


def phase2_snippet(venv: str, scratch: str, *, python_path: bool = False, root: str | None = None) -> str:
    """Shell for the job script (after venv activation and ``cd`` into the snapshot).

    Installs what the login node deferred, once, under the venv lock; a failure is reported and
    the file stays so the next job retries.  With ``python_path`` the snapshot ``root`` (and its
    ``src/``) go on ``PYTHONPATH`` (pyproject/editable projects); without ``root`` the current
    directory is used.
    """
    parts = []
    if python_path:
        r = q(root) if root else '"$PWD"'
        parts.append(f'export PYTHONPATH={r}"${{PYTHONPATH:+:$PYTHONPATH}}"; '
                     f'[ -d {r}/src ] && export PYTHONPATH={r}/src:"$PYTHONPATH"')
    body = _common(venv, scratch).replace('echo "RVDEPS:LOCKTIMEOUT"; exit 75;',
                                          'echo "[rv] venv lock timeout" >&2; exit 0;')
    parts.append(f"""if [ -f {q(venv + '/' + PHASE2_FILE)} ]; then (
{body}if [ -f "$V/{PHASE2_FILE}" ]; then
  echo "[rv] installing deferred dependencies on $(hostname)" >&2
  if inst -r "$V/{PHASE2_FILE}" >&2; then rm -f "$V/{PHASE2_FILE}"; echo "[rv] deferred dependencies installed" >&2
  else echo "[rv] warning: deferred dependencies failed to install; the next job retries" >&2; fi
fi
) fi""")
    return "\n".join(parts)


@dataclass(frozen=True)
class ClusterPython:
    """The Python a venv is (or would be) created with on the login node."""

    version: str | None  # "3.12.8"; None: no python3 found
    path: str | None
    module: str | None  # the module loaded for it; None: no module system (or it failed)
    venv_version: str | None = None  # the existing venv's Python, if there is a venv

    @property
    def recreate(self) -> bool:
        """The existing venv was made with another Python (major.minor) and will be re-created."""
        return bool(self.venv_version and self.version
                    and self.venv_version.rsplit(".", 1)[0] != self.version.rsplit(".", 1)[0])

    def describe(self) -> str:
        if not self.version:
            return "no python3 found on the login node"
        how = f"module {self.module}" if self.module else "no module system: the login shell's python3"
        text = f"Python {self.version} ({self.path}; {how})"
        if self.recreate:
            text += f"; the venv has Python {self.venv_version} and will be re-created"
        return text

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "path": self.path, "module": self.module,
                "venv_version": self.venv_version, "recreate": self.recreate}


def _parse_python(lines: list[str]) -> ClusterPython | None:
    line = next((ln for ln in lines if ln.startswith("RVDEPS:PYTHON ")), None)
    if line is None:
        return None
    parts = line[len("RVDEPS:PYTHON "):].split(" ", 2)
    version = parts[0] if parts and parts[0] != "?" else None
    module = parts[1] if len(parts) > 1 and parts[1] != "-" else None
    path = parts[2] if len(parts) > 2 and parts[2] else None
    vv = next((ln.split(" ", 1)[1] for ln in lines if ln.startswith("RVDEPS:VENVPY ")), None)
    return ClusterPython(version, path, module, vv or None)


async def cluster_python(cluster: Cluster, venv: str | None = None) -> ClusterPython | None:
    """Which Python a venv gets on this cluster (the dry run shows it); None on the demo."""
    if cluster.is_demo:
        return None
    script = "set -u\n" + python_setup()
    if venv:
        script += f'V={q(venv)}\n{_VENV_VERSION}[ -n "$VV" ] && echo "RVDEPS:VENVPY $VV"\n'
    res = await cluster.exec(script + "exit 0\n", timeout=120)
    return _parse_python(res.stdout.splitlines())


@dataclass(frozen=True)
class VenvResult:
    venv: str
    status: str  # "up-to-date" | "installed" | "skipped"
    created: bool = False
    deferred: tuple[str, ...] = ()
    log: str = ""
    python: ClusterPython | None = None
    recreated: str | None = None  # the old venv's Python version when it was re-created


def requirements_upload_path(venv: str) -> str:
    """A fresh name next to the venv for this launch's uploaded requirements file."""
    return f"{venv.rstrip('/')}.req-{secrets.token_hex(6)}.txt"


async def ensure_venv(cluster: Cluster, spec: DepsSpec, venv: str, code_dir: str, *,
                      timeout: float = 3600) -> VenvResult:
    """Phase 1: create/update the venv on the login node unless its hash already matches.

    The requirements travel as a 0600 file over SFTP and are installed with ``-r``."""
    req_file = requirements_upload_path(venv)
    await cluster.write_file(req_file, requirements_text(spec, code_dir), 0o600)
    try:
        res = await cluster.exec(install_script(spec, venv, code_dir, cluster.scratch, req_file), timeout=timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await cluster.exec(f"rm -f -- {q(req_file)}")
        raise
    lines = res.stdout.splitlines()
    marks = [ln for ln in lines if ln.startswith("RVDEPS:")]
    python = _parse_python(lines)
    recreated = next((m.split(" ", 1)[1] for m in marks if m.startswith("RVDEPS:RECREATE ")), None)
    if "RVDEPS:UPTODATE" in marks:
        return VenvResult(venv, "up-to-date", python=python)
    if "RVDEPS:DONE" not in marks:
        tail = mask_secrets("\n".join(res.stderr.strip().splitlines()[-10:]))
        why = {"RVDEPS:VENVFAIL": "could not create the venv", "RVDEPS:NOCODE": "the code directory is missing",
               "RVDEPS:LOCKTIMEOUT": "another install held the venv lock for an hour",
               "RVDEPS:NOPYTHON": "no python3 on the login node (after loading the Python module)",
               "RVDEPS:NOREQS": "the uploaded requirements file is missing"}
        reason = next((why[m] for m in marks if m in why), f"the install script exited {res.exit_status}")
        raise DepsError(f"dependency install failed: {reason}\n{tail}",
                        hint="check python3/uv on the login node with `rv exec`")
    deferred = []
    for m in marks:
        if m.startswith("RVDEPS:DEFER "):
            idx = m.split(" ", 1)[1]
            if idx.isdigit() and int(idx) < len(spec.requirements):
                deferred.append(spec.requirements[int(idx)])
    return VenvResult(venv, "installed", created="RVDEPS:CREATED" in marks, deferred=tuple(deferred),
                      log=mask_secrets(res.stderr[-4000:]), python=python, recreated=recreated)
