#!/usr/bin/env bash
# Start (or reuse) the local Slurm test cluster; installs packages first when root and missing.
# Prints cluster.json on stdout. State dir: $RV_TEST_CLUSTER_DIR (default /tmp/rv-test-cluster).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$(id -u)" -eq 0 ]; then
  bash "$here/install.sh" >&2
fi
exec python3 "$here/cluster.py" start
