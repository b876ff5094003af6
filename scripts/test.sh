#!/usr/bin/env bash
# THE test command: bash scripts/test.sh [pytest args]
#
# On a fresh Debian machine as root it installs the system packages (local Slurm cluster, sshd,
# tmux, git, python3-venv), creates/uses .venv, installs rv-tui with its test extra, starts the
# local Slurm test cluster (tests/cluster/) and runs pytest. Exits with pytest's code; "no tests
# collected" (5) counts as failure. The cluster is left running for the next run
# (stop it with: python3 tests/cluster/cluster.py stop; or set RV_STOP_CLUSTER=1).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
say() { echo "[test.sh] $*" >&2; }
ci() { case "${CI:-}" in 1|true|TRUE|True|yes) return 0;; *) return 1;; esac; }

# 1. System packages (root only).
extra=(tmux git)
if ! command -v python3 >/dev/null 2>&1; then extra+=(python3); fi
if [ "$(id -u)" -eq 0 ]; then
  bash tests/cluster/install.sh "${extra[@]}" || { say "package install failed"; exit 1; }
else
  say "not root: skipping package install and the local Slurm cluster (cluster tests will skip)"
fi

# 2. Virtualenv at .venv with the project and its test extra (shared with scripts/rv.sh).
py="$(bash scripts/venv.sh test)" || exit 1

# 3. The local Slurm test cluster (conftest.py reuses it; it also starts it itself if needed).
if [ "$(id -u)" -eq 0 ]; then
  t0=$(date +%s.%N)
  if out="$(bash tests/cluster/start.sh 2>&1)"; then
    say "local Slurm cluster up ($(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s)"
  else
    echo "$out" >&2
    if ci; then say "local Slurm cluster failed to start (CI=true): failing"; exit 1; fi
    say "local Slurm cluster failed to start: cluster tests will skip"
  fi
fi

# 4. pytest.
"$py" -m pytest "$@" </dev/null
rc=$?
if [ "$rc" -eq 5 ]; then
  say "pytest collected no tests: treating as failure"
  rc=1
fi
if [ "${RV_STOP_CLUSTER:-0}" = 1 ] && [ "$(id -u)" -eq 0 ]; then
  python3 tests/cluster/cluster.py stop >&2 || true
fi
exit "$rc"
