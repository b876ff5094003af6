#!/usr/bin/env bash
# THE main command: bash scripts/rv.sh [rv args]
# Sets up .venv on first use and runs rv. With no arguments it opens the TUI; with no cluster
# configured (~/.rv/config.toml, or $RV_HOME/config.toml) it runs against the built-in demo cluster.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v python3 >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv >&2
fi
py="$(bash scripts/venv.sh)" || exit 1
cd - >/dev/null
exec "$py" -m rv_tui "$@"
