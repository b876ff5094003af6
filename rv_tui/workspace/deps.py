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
"""

from __future__ import annotations

import hashlib
import json
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rv_tui.cluster.base import Cluster
from rv_tui.errors import RvError
from rv_tui.paths import RemotePaths
from rv_tui.quoting import join, q

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
if command -v flock >/dev/null 2>&1; then
  exec 9>"$L"; flock -w 3600 9 || {{ echo "RVDEPS:LOCKTIMEOUT"; exit 75; }}
else
  n=0; while ! mkdir "$L.d" 2>/dev/null; do n=$((n+1)); [ $n -gt 3600 ] && {{ echo "RVDEPS:LOCKTIMEOUT"; exit 75; }}; sleep 1; done
  trap 'rmdir "$L.d"' EXIT
fi
"""


def install_script(spec: DepsSpec, venv: str, code_dir: str, scratch: str) -> str:
    """Phase 1 on the login node; prints ``RVDEPS:`` status lines for :func:`ensure_venv`."""
    opts = join(spec.options)
    reqs = join(spec.requirements)
    per_pkg = "\n".join(
        f"  inst {opts} {q(r)} >&2 || {{ echo RVDEPS:DEFER {q(r)}; printf '%s\\n' {q(r)} >> \"$V/{PHASE2_FILE}.tmp\"; }}"
        for r in spec.requirements)
    opt_lines = "".join(f"{line}\n" for line in _option_lines(spec.options))
    return f"""set -u
{_common(venv, scratch)}
if [ -f "$V/{HASH_FILE}" ] && [ "$(cat "$V/{HASH_FILE}")" = {q(spec.hash)} ] && [ -x "$V/bin/python" ]; then
  echo RVDEPS:UPTODATE; exit 0
fi
if [ ! -x "$V/bin/python" ]; then
  if [ -n "$UV" ]; then "$UV" venv --seed --python python3 "$V" >&2; else python3 -m venv "$V" >&2; fi || {{ echo RVDEPS:VENVFAIL; exit 1; }}
  echo RVDEPS:CREATED
fi
cd {q(code_dir)} || {{ echo RVDEPS:NOCODE; exit 1; }}
rm -f "$V/{PHASE2_FILE}" "$V/{PHASE2_FILE}.tmp"
if [ -n {q(reqs)} ]; then
 if inst {opts} {reqs} >&2; then :; else
{per_pkg or '  :'}
 fi
fi
if [ -f "$V/{PHASE2_FILE}.tmp" ]; then
  {{ printf '%s' {q(opt_lines)}; cat "$V/{PHASE2_FILE}.tmp"; }} > "$V/{PHASE2_FILE}" && rm -f "$V/{PHASE2_FILE}.tmp"
fi
printf '%s' {q(spec.hash)} > "$V/{HASH_FILE}"
echo RVDEPS:DONE
"""


def _option_lines(options: tuple[str, ...]) -> list[str]:
    """Options re-rendered as requirements-file lines (one option with its value per line)."""
    lines: list[str] = []
    i = 0
    while i < len(options):
        o = options[i]
        if o.split("=", 1)[0] in _VALUE_OPTS and "=" not in o and i + 1 < len(options):
            lines.append(f"{o} {options[i + 1]}")
            i += 2
        else:
            lines.append(o)
            i += 1
    return lines


def phase2_snippet(venv: str, scratch: str, *, python_path: bool = False) -> str:
    """Shell for the job script (after venv activation and ``cd`` into the snapshot).

    Installs what the login node deferred, once, under the venv lock; a failure is reported and
    the file stays so the next job retries.  With ``python_path`` the snapshot (and its ``src/``)
    go on ``PYTHONPATH`` (pyproject/editable projects).
    """
    parts = []
    if python_path:
        parts.append('export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"; '
                     '[ -d "$PWD/src" ] && export PYTHONPATH="$PWD/src:$PYTHONPATH"')
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
class VenvResult:
    venv: str
    status: str  # "up-to-date" | "installed" | "skipped"
    created: bool = False
    deferred: tuple[str, ...] = ()
    log: str = ""


async def ensure_venv(cluster: Cluster, spec: DepsSpec, venv: str, code_dir: str, *,
                      timeout: float = 3600) -> VenvResult:
    """Phase 1: create/update the venv on the login node unless its hash already matches."""
    res = await cluster.exec(install_script(spec, venv, code_dir, cluster.scratch), timeout=timeout)
    lines = res.stdout.splitlines()
    marks = [ln for ln in lines if ln.startswith("RVDEPS:")]
    if "RVDEPS:UPTODATE" in marks:
        return VenvResult(venv, "up-to-date")
    if "RVDEPS:DONE" not in marks:
        tail = "\n".join(res.stderr.strip().splitlines()[-10:])
        why = {"RVDEPS:VENVFAIL": "could not create the venv", "RVDEPS:NOCODE": "the code directory is missing",
               "RVDEPS:LOCKTIMEOUT": "another install held the venv lock for an hour"}
        reason = next((why[m] for m in marks if m in why), f"the install script exited {res.exit_status}")
        raise DepsError(f"dependency install failed: {reason}\n{tail}",
                        hint="check python3/uv on the login node with `rv exec`")
    deferred = tuple(shlex.split(m[len("RVDEPS:DEFER "):])[0] for m in marks if m.startswith("RVDEPS:DEFER "))
    return VenvResult(venv, "installed", created="RVDEPS:CREATED" in marks, deferred=deferred,
                      log=res.stderr[-4000:])
