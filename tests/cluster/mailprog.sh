#!/bin/sh
# MailProg of the rv-tui test cluster: instead of sending mail, record what slurmctld would send.
# slurmctld calls it as `MailProg -s SUBJECT USER` (body, if any, on stdin) with SLURM_JOB_* in
# its environment.  Each call appends one record to $STATE/mail/mail.log:
#   @@mail@@ <epoch> ; argv lines ; "SLURM_*=" env lines ; "-- body" ; stdin ; "@@end@@"
# STATE is $RV_TEST_CLUSTER_DIR (slurmctld's environment rarely has it) or /tmp/rv-test-cluster.
dir="${RV_TEST_CLUSTER_DIR:-/tmp/rv-test-cluster}/mail"
mkdir -p "$dir" 2>/dev/null
umask 022
{
  echo "@@mail@@ $(date +%s)"
  for a in "$@"; do printf 'arg=%s\n' "$a"; done
  env | grep '^SLURM_' | sort
  echo "-- body"
  cat
  echo
  echo "@@end@@"
} >> "$dir/mail.log" 2>/dev/null
exit 0
