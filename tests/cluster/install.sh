#!/usr/bin/env bash
# Install the system packages the local Slurm test cluster needs (Debian/Ubuntu, as root).
# Idempotent: does nothing when everything is already installed.
# Extra packages may be passed as arguments (scripts/test.sh adds tmux, git, python3-venv).
set -euo pipefail

# slurmdbd + mariadb-server: the accounting database (sacct, associations, QOS limits).
pkgs=(slurmctld slurmd slurm-client munge openssh-server openssh-client slurmdbd mariadb-server "$@")
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: missing packages (${missing[*]}) and not root; install them as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install.sh: missing packages (${missing[*]}) and no apt-get (Debian expected)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "[rv-test-cluster] installing: ${missing[*]}"
# apt-get update only when the package lists are missing or an install attempt fails.
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  apt-get update -qq
fi
# Keep Debian's maintainer scripts from starting the system-wide daemons (we run our own).
policy_added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  policy_added=1
fi
cleanup() { if [ "$policy_added" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
