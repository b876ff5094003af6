"""A small Lmod stand-in for the test cluster's login node: ``module load <name/version>``.

Why: on Rivanna the cluster's Python comes from the module system (``module load
miniforge/24.11.3-py3.12``) and the login shell's own ``python3`` is the old system one; rv must
create venvs with the module's Python.  Plain Debian has no module system, so without this the
module path is never exercised.

What it installs (as root, idempotent), under ``<state>/lmod``:

* ``init/bash``: defines a ``module`` shell function and exports it (``export -f``), as Lmod does,
  so jobs submitted from a login shell inherit it;
* ``apps/<name>/<version>/bin``: ``miniforge/24.11.3-py3.12`` provides ``python3``/``python``
  (links to the host's interpreter, at a path of their own so tests can tell which Python a venv
  was made with); ``cuda/12.8.0`` provides nothing but ``CUDA_HOME``;
* a hook at the top of the test user's ``~/.bashrc`` (before Debian's "not interactive: return"),
  so every ssh command and login shell has ``module`` (Debian's bash reads ``~/.bashrc`` for
  non-interactive ssh commands, like Rivanna's does through /etc/bashrc).

``module load`` of an unknown module fails the whole command with Lmod's message, like Lmod.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path

MODULES = {
    "miniforge/24.11.3-py3.12": {"python3": "python3", "python": "python3"},
    "cuda/12.8.0": {},
}
HOOK_MARK = "# rv-test-cluster: module stand-in"

INIT_BASH = r'''# rv-test-cluster module stand-in (tests/cluster/module_standin.py); sourced by ~/.bashrc
export RV_MODULE_ROOT=@ROOT@
module() {
  local cmd="${1:-}"; shift 2>/dev/null || true
  case "$cmd" in
    load|add)
      local m missing=""
      for m in "$@"; do [ -d "$RV_MODULE_ROOT/apps/$m" ] || missing="$missing $m"; done
      if [ -n "$missing" ]; then
        echo "Lmod has detected the following error: The following module(s) are unknown:$missing" >&2
        return 1
      fi
      for m in "$@"; do
        case ":${LOADEDMODULES:-}:" in *":$m:"*) continue ;; esac
        export PATH="$RV_MODULE_ROOT/apps/$m/bin:$PATH"
        export LOADEDMODULES="${LOADEDMODULES:+$LOADEDMODULES:}$m"
        case "$m" in cuda/*) export CUDA_HOME="$RV_MODULE_ROOT/apps/$m" ;; esac
      done ;;
    list) echo "Currently Loaded Modules: ${LOADEDMODULES:-none}" >&2 ;;
    avail) (cd "$RV_MODULE_ROOT/apps" && ls -d */* ) >&2 ;;
    purge) unset LOADEDMODULES ;;
    *) echo "module: unsupported subcommand '$cmd' (rv-test-cluster stand-in)" >&2; return 1 ;;
  esac
}
export -f module
'''


def install(state: Path, user: str) -> None:
    """Write the stand-in under ``state/lmod`` and hook it into ``user``'s ``~/.bashrc``."""
    root = state / "lmod"
    # the host's system interpreter (never a venv's or root's pyenv: the test user must run it)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else (shutil.which("python3") or "python3")
    real = os.path.realpath(python)
    for name, tools in MODULES.items():
        bindir = root / "apps" / name / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        for tool in tools:
            link = bindir / tool
            if not (link.is_symlink() and os.readlink(link) == real):
                link.unlink(missing_ok=True)
                link.symlink_to(real)
    init = root / "init" / "bash"
    init.parent.mkdir(parents=True, exist_ok=True)
    text = INIT_BASH.replace("@ROOT@", str(root))
    if not init.exists() or init.read_text() != text:
        tmp = init.with_name("bash.tmp")
        tmp.write_text(text)
        tmp.replace(init)
    for d in [root, *root.rglob("*")]:
        if d.is_dir():
            os.chmod(d, 0o755)
    os.chmod(init, 0o644)
    pw = pwd.getpwnam(user)
    rc = Path(pw.pw_dir) / ".bashrc"
    current = rc.read_text() if rc.exists() else ""
    hook = f"[ -r {init} ] && . {init}  {HOOK_MARK}\n"
    if hook not in current:
        kept = "".join(ln for ln in current.splitlines(keepends=True) if HOOK_MARK not in ln)
        rc.write_text(hook + kept)
        os.chown(rc, pw.pw_uid, pw.pw_gid)


if __name__ == "__main__":  # python3 tests/cluster/module_standin.py [state] [user]
    install(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RV_TEST_CLUSTER_DIR", "/tmp/rv-test-cluster")),
            sys.argv[2] if len(sys.argv) > 2 else "rvtest")
