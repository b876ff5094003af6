"""The race claim, in shell: the first lines every batch script runs.

Why its own module: the claim is the whole of "exactly one strategy runs the command" (atomic
``mkdir <group_dir>/claim``, merit deferral, requeue, fail closed, late-sibling re-scans; see
:mod:`rv_tui.jobs.templates`), and it reads best on its own, next to the numbers it uses.
"""

from __future__ import annotations

from rv_tui.jobs.context import JobContext
from rv_tui.paths import RemotePaths
from rv_tui.quoting import q

__all__ = ["CLAIM_ERROR_EXIT", "DEFER_MAX_S", "RESCAN_GAPS_S", "claim_block"]

#: longest a started job waits for a better-ranked running sibling to claim before claiming itself
DEFER_MAX_S = 30
#: gaps (seconds) between the winner's re-scans for siblings whose sbatch landed after its claim
RESCAN_GAPS_S = (1, 2, 7, 20)
#: exit status of a job that could not create or read its group's claim (it ran nothing)
CLAIM_ERROR_EXIT = 3


def claim_block(ctx: JobContext) -> str:
    """The shell that claims the race group first thing in every job (see the module docstring)."""
    gdir = RemotePaths(ctx.scratch).group_dir(ctx.group_id)
    ticks = DEFER_MAX_S * 5
    rescans = " ".join(str(int(x)) for x in RESCAN_GAPS_S)
    return f"""\
# --- first wins: claim the race group atomically before doing anything else.
#     merit: a job that starts while a better-ranked sibling (an earlier job id of this group: rv
#     submits in rank order) is RUNNING/CONFIGURING lets that sibling claim first;
#     requeue: the owner restarted under its own id runs again, everybody else stays a loser;
#     fail closed: any error but "the claim exists" stops the job before the command.
_rv_gid={q(ctx.group_id)}
_rv_gdir={q(gdir)}
_rv_claim="$_rv_gdir/claim"
_rv_me=$SLURM_JOB_ID
_rv_won=""
_rv_scan=""
_rv_restart=${{SLURM_RESTART_COUNT:-0}}
case "$_rv_restart" in ''|*[!0-9]*) _rv_restart=0 ;; esac
_rv_closed() {{ echo "[rv] $*; not running the command" >&2; exit {CLAIM_ERROR_EXIT}; }}
if [ "$_rv_restart" -gt 0 ]; then
  _rv_m="[rv] ===== restart $_rv_restart of job $_rv_me (requeued by Slurm) on $(hostname) at $(date '+%Y-%m-%dT%H:%M:%S') ====="
  echo "$_rv_m"; echo "$_rv_m" >&2
fi
_rv_e=$(mkdir -p -- "$_rv_gdir" 2>&1) || _rv_closed "cannot create the race group directory $_rv_gdir: ${{_rv_e:-mkdir failed}}"
_rv_better() {{
  squeue -h -u "${{USER:-$(id -un)}}" -o '%i %k %T' 2>/dev/null | awk -v c="rvgroup:$_rv_gid" -v me="$_rv_me" \\
    '$2 == c && $1 ~ /^[0-9]+$/ && $1 + 0 < me + 0 && ($3 == "RUNNING" || $3 == "CONFIGURING") {{printf "%s ", $1}}'
}}
_rv_defer() {{
  local _b _t=0
  _b=$(_rv_better)
  [ -n "$_b" ] || return 0
  echo "[rv] deferring to better-ranked sibling(s) already running: $_b"
  while [ "$_t" -lt {ticks} ]; do
    [ -d "$_rv_claim" ] && return 0
    sleep 0.2; _t=$((_t + 1))
    if [ $((_t % 5)) = 0 ]; then
      _b=$(_rv_better)
      if [ -z "$_b" ]; then echo "[rv] the better-ranked sibling(s) ended without claiming; claiming"; return 0; fi
    fi
  done
  echo "[rv] better-ranked sibling(s) $_b did not claim within {DEFER_MAX_S}s; claiming"
}}
_rv_owner() {{
  local _i _w=""
  for _i in $(seq 1 50); do
    _w=$(cat -- "$_rv_claim/owner" 2>/dev/null)
    [ -n "$_w" ] && break
    sleep 0.1
  done
  printf '%s' "$_w"
  [ -n "$_w" ]
}}
_rv_cur=$(cat -- "$_rv_claim/owner" 2>/dev/null)
if [ -n "${{RV_CLAIM_OWNER:-}}" ] && [ "$_rv_cur" = "$RV_CLAIM_OWNER" ]; then
  echo "[rv] race group $_rv_gid: segment of job $RV_CLAIM_OWNER's chain continues as job $_rv_me"
elif [ -n "$_rv_cur" ] && [ "$_rv_cur" = "$_rv_me" ]; then
  echo "[rv] race group $_rv_gid: job $_rv_me owns the claim; running the command again (restart $_rv_restart)"
  RV_CLAIM_OWNER=$_rv_me
else
  [ -d "$_rv_claim" ] || _rv_defer
  if _rv_e=$(mkdir -- "$_rv_claim" 2>&1); then
    _rv_e=$( {{ printf '%s\\n' "$_rv_me" > "$_rv_claim/owner.$_rv_me" && mv -f -- "$_rv_claim/owner.$_rv_me" "$_rv_claim/owner"; }} 2>&1 ) \\
      || _rv_closed "claimed $_rv_claim but cannot record the owner in $_rv_claim/owner: ${{_rv_e:-write failed}}"
    RV_CLAIM_OWNER=$_rv_me
    _rv_won=1
    printf '%s\\n' "$_rv_me" >> "$_rv_gdir/segments"
    echo "[rv] race group $_rv_gid won by job $_rv_me"
  elif [ -d "$_rv_claim" ]; then
    _rv_w=$(_rv_owner) || _rv_closed "the race group's claim exists but its owner $_rv_claim/owner cannot be read"
    if [ "$_rv_w" != "$_rv_me" ]; then
      echo "[rv] race group already won by job $_rv_w; exiting"
      exit 0
    fi
    echo "[rv] race group $_rv_gid: job $_rv_me owns the claim; running the command again (restart $_rv_restart)"
    RV_CLAIM_OWNER=$_rv_me
  else
    _rv_closed "cannot create the race group's claim $_rv_claim: ${{_rv_e:-mkdir failed}}"
  fi
fi
printf '%s\\n' "$_rv_me" > "$_rv_gdir/winner.$_rv_me" 2>/dev/null && mv -f -- "$_rv_gdir/winner.$_rv_me" "$_rv_gdir/winner"
# cancel the siblings still queued (or just started): same group comment, or listed by the client;
# again a few times later (and at exit) for siblings whose sbatch landed after this scan
_rv_gone=" "
_rv_siblings() {{
  local _keep _kill="" _id
  _keep=" $_rv_me $RV_CLAIM_OWNER $(tr '\\n' ' ' < "$_rv_gdir/segments" 2>/dev/null) "
  for _id in $( {{ squeue -h -u "${{USER:-$(id -un)}}" -o '%i %k' 2>/dev/null | awk -v c="rvgroup:$_rv_gid" '$2 == c {{print $1}}'; cat -- "$_rv_gdir/jobs" 2>/dev/null; }} | grep -E '^[0-9]+$' | sort -u); do
    case "$_keep$_rv_gone" in *" $_id "*) ;; *) _kill="$_kill $_id" ;; esac
  done
  if [ -n "$_kill" ]; then
    echo "[rv] cancelling ${{1:-}}siblings:$_kill"
    scancel $_kill 2>/dev/null || true
    _rv_gone="$_rv_gone${{_kill# }} "
  fi
}}
_rv_siblings
( trap - TERM INT USR1 USR2 EXIT; for _rv_d in {rescans}; do sleep "$_rv_d" </dev/null >/dev/null 2>&1; _rv_siblings "late "; done ) &
_rv_scan=$!
# at exit: stop the re-scanner, one last look for late siblings
_rv_claim_exit() {{ [ -z "$_rv_scan" ] || kill "$_rv_scan" 2>/dev/null; _rv_scan=""; _rv_siblings "late "; }}
"""
