#!/usr/bin/env bash
# Create (or reuse) .venv with rv-tui installed; prints the venv's python path on stdout.
# Usage: bash scripts/venv.sh [extra]   e.g. "test" installs '.[test]'.
# Used by both README commands (scripts/rv.sh and scripts/test.sh).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
extra="${1:-}"
say() { echo "[venv.sh] $*" >&2; }
py="$root/.venv/bin/python"
if [ ! -x "$py" ] || ! "$py" -c 'import sys' >/dev/null 2>&1; then
  rm -rf .venv
  if ! python3 -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      pyver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq --no-install-recommends python3-venv "python${pyver}-venv" >&2 \
        || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends python3-venv >&2; }
    fi
    python3 -m venv .venv || { say "python3 -m venv failed (install python3-venv)"; exit 1; }
  fi
fi
spec="."
[ -n "$extra" ] && spec=".[$extra]"
stamp=".venv/.rv-installed-${extra:-base}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing rv-tui${extra:+[$extra]} into .venv"
  "$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$py" -m pip install -q -e "$spec" >&2 || { say "pip install -e '$spec' failed"; exit 1; }
  echo "$want" > "$stamp"
fi
echo "$py"
