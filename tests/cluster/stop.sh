#!/usr/bin/env bash
# Stop the local Slurm test cluster: ends only the processes start.sh started (pid files and the
# fake nodes' UTS namespaces).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$here/cluster.py" stop
