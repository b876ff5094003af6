"""Batch scripts for every strategy: simple, multi-node, checkpoint-restart and interactive holds.

Why this module exists: the script is where correctness lives once the laptop is closed.  Each
script, before anything else, claims its race group on the shared filesystem with an atomic
``mkdir <group_dir>/claim``: the winner records itself and cancels its siblings (found by the
``--comment=rvgroup:<id>`` every sibling carries, and by ``<group_dir>/jobs`` written by the
client); a loser prints "[rv] race group already won by job N; exiting" and exits 0 without
running anything.  So exactly one strategy runs the user's command even if two start in the same
scheduler cycle or no client is watching.  Around that claim:

* merit: the race submits in rank order, so a better-ranked sibling has the lower job id; a job
  that starts while such a sibling is RUNNING/CONFIGURING and nobody has claimed yet waits for it
  (at most :data:`DEFER_MAX_S`), so the best of several same-cycle starts wins, not the fastest
  ``mkdir``;
* requeue: Slurm reruns a requeued job (node failure, preemption, ``scontrol requeue``) under the
  same id with ``SLURM_RESTART_COUNT`` > 0; the claim's owner runs the command again (logs are
  appended, a line marks each restart), every other job stays a loser;
* fail closed: a group dir, claim or owner file that cannot be made or read for any reason but
  "the claim exists" ends the job with :data:`CLAIM_ERROR_EXIT` and the path and error on stderr;
* late siblings: the winner looks for siblings again a few times after its claim and at exit
  (:data:`RESCAN_GAPS_S`), so a sibling whose sbatch landed after the first scan is cancelled
  with no client watching.

Fixes over the original templates (original-rv.md §3, §11 items 3, 9, 11, 14-17, 21):

* user ``rv env`` values are sourced *after* rv's defaults, so they win (HF_HOME, OMP_NUM_THREADS);
* the command always runs as ``bash -c <quoted command>``: compound shell strings stay whole
  (``timeout`` used to wrap only the first word) and nothing in a name/command/value can break
  out of the script;
* checkpoint-restart resubmits only when its own timeout fired (exit 124) and the total is not
  reached; a genuine crash stops the chain and reports FAILED; it has a kill-after; multi-node
  checkpoint jobs run on every node through ``srun``; ``--output`` paths are copied each segment;
* the command runs in the background while the shell waits, so Slurm's SIGTERM (time limit,
  scancel) and the ``--signal=B:USR2`` early warning reach the traps at once: TIMEOUT and kills
  are reported; final notifications are sent in the foreground with a short timeout;
* the command text is never edited: torchrun's rendezvous comes from ``PET_MASTER_PORT``,
  ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` (flags the user typed still win);
  :func:`inject_torchrun_flags` stays for callers that want the flags spelled out.
"""

from __future__ import annotations

import re

from rv_tui.allocator.model import Strategy, StrategyKind
from rv_tui.cluster.base import JobSubmission
from rv_tui.durations import format_slurm
from rv_tui.errors import RvError
from rv_tui.jobs.autoenv import auto_env, export_lines
from rv_tui.jobs.claim import CLAIM_ERROR_EXIT, DEFER_MAX_S, RESCAN_GAPS_S, claim_block
from rv_tui.jobs.context import JobContext
from rv_tui.jobs.naming import sanitize_job_name
from rv_tui.jobs.notify import NotifySettings, mail_shell, notify_shell
from rv_tui.paths import RemotePaths
from rv_tui.quoting import join, q

__all__ = [
    "CHECKPOINT_BUFFER_S", "GROUP_COMMENT_PREFIX", "JobContext", "NotifySettings", "attach_command",
    "attach_rc_path", "build_script", "build_submission", "group_comment", "inject_torchrun_flags",
    "template_kind", "CLAIM_ERROR_EXIT", "DEFER_MAX_S", "RESCAN_GAPS_S",
]

#: seconds before the segment's end at which a checkpoint segment's command gets SIGUSR1
#: (``RV_CKPT_BUFFER`` in the job's environment, e.g. from ``rv env``, overrides it)
CHECKPOINT_BUFFER_S = 600
GROUP_COMMENT_PREFIX = "rvgroup:"
#: modules loaded when the cluster has Lmod (Rivanna); skipped silently elsewhere
DEFAULT_MODULES = ("cuda/12.8.0", "miniforge/24.11.3-py3.12")

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# what may appear unquoted on an #SBATCH line (sbatch splits those lines on whitespace)
_SAFE_DIRECTIVE = re.compile(r"[A-Za-z0-9_.:,&|=+@%/\[\]()!*-]+")


def group_comment(group_id: str) -> str:
    """The ``--comment`` every job of a race group carries (how the winner finds siblings)."""
    return f"{GROUP_COMMENT_PREFIX}{group_id}"


def template_kind(ctx: JobContext, strategy: Strategy) -> str:
    """``interactive``, ``checkpoint``, ``multi_node`` or ``simple``."""
    if ctx.command is None:
        return "interactive"  # never resubmit an idle hold (original bug 4)
    if strategy.kind in (StrategyKind.CHECKPOINT, StrategyKind.TIMEMIN):
        # a --time-min batch job may get only the window: it is a window-sized checkpoint
        # segment (SIGUSR1 before its real end, then rv resubmits the rest), as its note says
        return "checkpoint"
    return "multi_node" if strategy.nodes > 1 else "simple"


def attach_rc_path(ctx: JobContext, job_id: str) -> str:
    """Where an interactive job writes the rcfile ``rv up`` attaches with."""
    return f"{RemotePaths(ctx.scratch).group_dir(ctx.group_id)}/attach-{job_id}.rc"


_ATTACH = ('for _i in $(seq 1 100); do [ -r "$1" ] && break; sleep 0.1; done; '
           'if [ -r "$1" ]; then exec bash --rcfile "$1" -i; else exec bash -i; fi')


def attach_command(job_id: str, ctx: JobContext, node: str | None = None) -> list[str]:
    """argv for ``srun --jobid --overlap --pty`` into a running job, with rv env + venv active.

    Join it with :func:`rv_tui.quoting.join` and run it under ``ssh -t``.  The rcfile is written
    by the job itself when it starts (so it exists on the shared filesystem; we wait briefly).
    """
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise RvError(f"not a Slurm job id: {job_id!r}")
    argv = ["srun", f"--jobid={job_id}", "--overlap", "--pty", "-N1", "-n1"]
    if node:
        _check_directive("node", node)
        argv.append(f"--nodelist={node}")
    argv += ["bash", "-c", _ATTACH, "rv-attach", attach_rc_path(ctx, job_id)]
    return argv


# ----------------------------------------------------------------------------- helpers

def _check_directive(what: str, value: str) -> str:
    if not _SAFE_DIRECTIVE.fullmatch(value):
        raise RvError(f"unsafe {what} for an #SBATCH line: {value!r}",
                      hint="use letters, digits and . _ - : , only")
    return value


def _check_context(ctx: JobContext) -> None:
    if not _SAFE_ID.fullmatch(ctx.group_id):
        raise RvError(f"bad race group id: {ctx.group_id!r}")
    if not ctx.scratch.startswith("/") or not _SAFE_DIRECTIVE.fullmatch(ctx.scratch):
        raise RvError(f"scratch path {ctx.scratch!r} cannot be used in #SBATCH -o/-e",
                      hint="set [paths] scratch to an absolute path without spaces or quotes")


_TORCHRUN = re.compile(
    r"^(\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)(torchrun|python3?\s+-m\s+torch\.distributed\.(?:run|launch))(?=\s|$)")


def _has_flag(command: str, *names: str) -> bool:
    for n in names:
        for spelling in {n, "--" + n[2:].replace("-", "_")}:
            if re.search(rf"(?:^|\s){re.escape(spelling)}(?:=|\s|$)", command):
                return True
    return False


def inject_torchrun_flags(command: str, multi_node: bool) -> str:
    """Add the rendezvous flags torchrun needs under Slurm, unless the user gave them.

    Single node: ``--master-port=$MASTER_PORT``.  Multi-node: also ``--nnodes``, ``--node-rank``
    and ``--master-addr``.  Both ``--master-port`` and ``--master_port`` spellings count as
    given; ``--standalone`` and ``--rdzv-endpoint`` leave the command alone.
    """
    m = _TORCHRUN.match(command)
    if not m or _has_flag(command, "--standalone", "--rdzv-endpoint"):
        return command
    flags = []
    if multi_node:
        if not _has_flag(command, "--nnodes"):
            flags.append("--nnodes=$SLURM_NNODES")
        if not _has_flag(command, "--node-rank"):
            flags.append("--node-rank=$SLURM_PROCID")
        if not _has_flag(command, "--master-addr"):
            flags.append("--master-addr=$MASTER_ADDR")
    if not _has_flag(command, "--master-port"):
        flags.append("--master-port=$MASTER_PORT")
    if not flags:
        return command
    end = m.end(2)
    return command[:end] + " " + " ".join(flags) + command[end:]


_MANAGED = {
    "-p", "--partition", "--gres", "-t", "--time", "--time-min", "-A", "--account", "-N", "--nodes",
    "-n", "--ntasks", "--ntasks-per-node", "-c", "--cpus-per-task", "--mem", "-C", "--constraint",
    "-x", "--exclude", "-J", "--job-name", "-o", "--output", "-e", "--error", "--comment",
    "--signal", "--gpus", "-G", "--gpus-per-node", "--open-mode",
}


def _extra_directives(options: tuple[str, ...]) -> list[str]:
    """Strategy options rv does not already write (so the structured fields stay authoritative)."""
    out: list[str] = []
    i = 0
    while i < len(options):
        tok = options[i]
        key = tok.split("=", 1)[0]
        takes_value = (tok.startswith("-") and "=" not in tok and i + 1 < len(options)
                       and not options[i + 1].startswith("-"))
        val = options[i + 1] if takes_value else None
        i += 2 if takes_value else 1
        if key in _MANAGED:
            continue
        _check_directive("sbatch option", tok)
        if val is not None:
            _check_directive("sbatch option value", val)
            out.append(f"#SBATCH {tok} {val}" if not tok.startswith("--") else f"#SBATCH {tok}={val}")
        else:
            out.append(f"#SBATCH {tok}")
    return out


def _directives(ctx: JobContext, s: Strategy, kind: str) -> list[str]:
    logs = RemotePaths(ctx.scratch).logs_dir
    d = [
        f"#SBATCH -J {ctx.name}",
        f"#SBATCH -p {_check_directive('partition', s.partition)}",
    ]
    if s.gpus_per_node > 0:
        gres = f"gpu:{s.gpu_type}:{s.gpus_per_node}"
        try:
            from rv_tui.gpus import gpu_spec
            gres = gpu_spec(s.gpu_type).gres(s.gpus_per_node)
        except Exception:  # unknown type name: use it as the gres type as given
            pass
        d.append(f"#SBATCH --gres={_check_directive('gres', gres)}")
    d.append(f"#SBATCH -t {format_slurm(s.walltime_s)}")
    if s.time_min_s:
        d.append(f"#SBATCH --time-min={format_slurm(s.time_min_s)}")
    if ctx.account:
        d.append(f"#SBATCH -A {_check_directive('account', ctx.account)}")
    d.append(f"#SBATCH -N {int(s.nodes)}")
    if s.nodes > 1:
        d.append(f"#SBATCH --ntasks={int(s.nodes)}")
        d.append("#SBATCH --ntasks-per-node=1")
    else:
        d.append("#SBATCH --ntasks=1")
    if s.cpus_per_task:
        d.append(f"#SBATCH --cpus-per-task={int(s.cpus_per_task)}")
    if s.mem:
        d.append(f"#SBATCH --mem={_check_directive('mem', s.mem)}")
    if s.constraint:
        d.append(f"#SBATCH --constraint={_check_directive('constraint', s.constraint)}")
    if ctx.exclude_nodes:
        d.append(f"#SBATCH --exclude={_check_directive('exclude', ','.join(ctx.exclude_nodes))}")
    d.append(f"#SBATCH -o {logs}/%x-%j.out")
    d.append(f"#SBATCH -e {logs}/%x-%j.err")
    d.append("#SBATCH --open-mode=append")  # a requeued run keeps the first run's output
    d.append(f"#SBATCH --comment={group_comment(ctx.group_id)}")
    if ctx.mail_user:  # the address only; the winner switches the mail types on (mail_shell)
        d.append(f"#SBATCH --mail-user={_check_directive('notifications.email', ctx.mail_user)}")
    warn = min(120, max(10, s.walltime_s // 4))
    d.append(f"#SBATCH --signal=B:USR2@{warn}")
    d.extend(_extra_directives(tuple(s.sbatch_options)))
    return d


# ----------------------------------------------------------------------------- script parts

def _env_block(ctx: JobContext, s: Strategy) -> str:
    lines = ["# --- environment: rv's defaults first, then the user's `rv env` values (they win)"]
    lines += export_lines(auto_env(ctx, s))
    lines.append("export MASTER_PORT=$((29500 + ${SLURM_JOB_ID:-0} % 1000))")
    lines.append("export MASTER_ADDR=$(scontrol show hostnames \"${SLURM_JOB_NODELIST:-$(hostname)}\" 2>/dev/null | head -n 1)")
    lines.append('[ -n "$MASTER_ADDR" ] || export MASTER_ADDR=$(hostname)')
    if ctx.env_file:
        lines.append(f"if [ -f {q(ctx.env_file)} ]; then . {q(ctx.env_file)}; fi")
    lines.append('mkdir -p -- "$RV_CHECKPOINT_DIR" "$RV_OUTPUT_DIR" 2>/dev/null')
    mods = " ".join(q(m) for m in DEFAULT_MODULES)
    lines.append(f"if type module >/dev/null 2>&1; then module load {mods} >/dev/null 2>&1 || true; fi")
    return "\n".join(lines) + "\n"


def _end_time_block(s: Strategy) -> str:
    # Slurm 22.05 has no SLURM_JOB_END_TIME; ask squeue (handles a --time-min-shortened limit)
    return f"""\
_rv_end=${{SLURM_JOB_END_TIME:-}}
if [ -z "$_rv_end" ]; then
  _rv_e=$(squeue -h -j "$SLURM_JOB_ID" -o '%e' 2>/dev/null | head -n 1)
  case "$_rv_e" in [0-9]*) _rv_end=$(date -d "$_rv_e" +%s 2>/dev/null) ;; esac
fi
case "$_rv_end" in ''|*[!0-9]*) _rv_end=$((_rv_t0 + {int(s.walltime_s)})) ;; esac
"""


def _traps_block(ctx: JobContext, kind: str) -> str:
    notify = ctx.notify is not None
    final = ('_rv_final() { [ -n "$_rv_done" ] && return 0; _rv_done=1; _rv_notify "$@"; }'
             if notify else '_rv_final() { _rv_done=1; }')
    exit_body = ("  [ -n \"$_rv_done\" ] || { if [ \"$_rv_rc\" = 0 ]; then _rv_final COMPLETED 0; "
                 "else _rv_final FAILED \"$_rv_rc\" \"exit status $_rv_rc\"; fi; }")
    hold = "1" if kind == "interactive" else "''"
    if kind == "interactive":
        exit_body = "  :"
    return f"""\
# --- signals: Slurm's early warning (USR2), time limit / scancel (TERM), and every exit
_rv_done=""
_rv_child=""
_rv_hold={hold}
{final}
_rv_on_usr2() {{ echo "[rv] Slurm warns: the time limit is near" >&2; }}
_rv_on_term() {{
  trap - TERM INT
  local _now=$(date +%s) _ev=FAILED _why="killed by SIG$1 before the time limit (scancel, preemption or node failure)"
  if [ "$_now" -ge $((_rv_end - 20)) ]; then _ev=TIMEOUT; _why="time limit reached"; fi
  if [ -n "$_rv_hold" ] && [ "$_ev" != TIMEOUT ]; then _rv_done=1; fi
  echo "[rv] $_why" >&2
  if [ -n "$_rv_child" ]; then kill -TERM "$_rv_child" 2>/dev/null; fi
  _rv_final "$_ev" 143 "$_why"
  exit 143
}}
_rv_on_exit() {{
  local _rv_rc=$?
  _rv_claim_exit
{exit_body}
}}
trap _rv_on_usr2 USR2
trap '_rv_on_term TERM' TERM
trap '_rv_on_term INT' INT
trap _rv_on_exit EXIT
# run "$@" in the background and wait, so traps fire immediately (bash defers them for a
# foreground child); the loop keeps waiting through trapped signals
_rv_run() {{
  "$@" &
  _rv_child=$!
  wait "$_rv_child"; _rv_rc=$?
  while kill -0 "$_rv_child" 2>/dev/null; do wait "$_rv_child"; _rv_rc=$?; done
  _rv_child=""
  return $_rv_rc
}}
"""


def _setup_block(ctx: JobContext) -> str:
    lines = ["# --- workspace"]
    if ctx.venv:
        act = f"{ctx.venv.rstrip('/')}/bin/activate"
        lines.append(f"if [ -f {q(act)} ]; then . {q(act)}; fi")
    if ctx.work_dir:
        lines.append(f"cd -- {q(ctx.work_dir)} || {{ echo \"[rv] cannot cd to \"{q(ctx.work_dir)} >&2; exit 1; }}")
    if ctx.setup_snippet:
        lines.append(ctx.setup_snippet)
    return "\n".join(lines) + "\n"


def _copy_outputs(ctx: JobContext) -> str:
    return "".join(f"cp -r -- {q(p)} \"$RV_OUTPUT_DIR/\" 2>/dev/null || true\n" for p in ctx.output_paths)


def _rank_exports() -> str:
    return ("export NODE_RANK=$SLURM_PROCID RANK=$SLURM_PROCID MACHINE_RANK=$SLURM_PROCID "
            "WORLD_SIZE=$SLURM_NTASKS NNODES=$SLURM_NNODES LOCAL_RANK=0")


def _srun_prefix(ctx: JobContext, s: Strategy) -> str:
    logs = RemotePaths(ctx.scratch).logs_dir
    return join([
        "srun", f"--nodes={int(s.nodes)}", f"--ntasks={int(s.nodes)}", "--ntasks-per-node=1",
        "--kill-on-bad-exit=1", f"--output={logs}/{ctx.name}-%j.node%t.out",
        f"--error={logs}/{ctx.name}-%j.node%t.err", "--open-mode=append", "--export=ALL",
    ])


# the shell survives SIGUSR1 (its child gets the default); the command leaves the positional
# parameters before eval, so it sees "$#" = 0 exactly as under bash -c
_CKPT_INNER = 'trap : USR1; _rv_c=$1; shift; eval "$_rv_c"'


def _run_block(ctx: JobContext, s: Strategy, kind: str) -> str:
    assert ctx.command is not None
    multi = s.nodes > 1
    # the command runs byte for byte (rv_tui.jobs.command); torchrun gets its rendezvous from
    # PET_* variables (its documented env fallback for each flag), so flags the user typed win
    # and the text is never edited
    out = ["# --- the command, exactly as typed, under bash -c",
           f"_rv_cmd={q(ctx.command)}",
           'export PET_MASTER_PORT="$MASTER_PORT"'
           + (' PET_NNODES="$SLURM_NNODES" PET_MASTER_ADDR="$MASTER_ADDR"' if multi else "")]
    if kind == "simple":
        out.append('echo "[rv] job $SLURM_JOB_ID on $(hostname): running the command"')
        out.append('_rv_run bash -c "$_rv_cmd"; _rv_rc=$?')
    elif kind == "multi_node":
        task = _rank_exports() + ' PET_NODE_RANK=$SLURM_PROCID; exec bash -c "$1"'
        out.append(f'echo "[rv] job $SLURM_JOB_ID: {int(s.nodes)} nodes, master $MASTER_ADDR:$MASTER_PORT; '
                   'per-node logs in ${SLURM_JOB_NAME:-job}-$SLURM_JOB_ID.nodeN.{out,err}"')
        out.append(f'_rv_run {_srun_prefix(ctx, s)} bash -c {q(task)} rv-task "$_rv_cmd"; _rv_rc=$?')
    else:  # checkpoint
        out.append(_checkpoint_prelude(s))
        timed = 'timeout --signal=USR1 -k "$_rv_killafter" "$_rv_tmo" bash -c ' + q(_CKPT_INNER) + ' rv-job'
        if multi:
            task = _rank_exports() + " PET_NODE_RANK=$SLURM_PROCID; exec " + timed + ' "$1"'
            out.append('export _rv_killafter _rv_tmo')
            out.append(f'_rv_run {_srun_prefix(ctx, s)} bash -c {q(task)} rv-task "$_rv_cmd"; _rv_rc=$?')
        else:
            out.append(f'_rv_run {timed} "$_rv_cmd"; _rv_rc=$?')
    out.append(_copy_outputs(ctx).rstrip("\n"))
    if kind == "checkpoint":
        out.append(_checkpoint_epilogue(s))
    out.append('echo "[rv] command exited with status $_rv_rc"')
    out.append("exit $_rv_rc")
    return "\n".join(x for x in out if x) + "\n"


def _checkpoint_prelude(s: Strategy) -> str:
    total = int(s.total_time_s or s.walltime_s)
    return f"""\
# --- checkpoint-restart: SIGUSR1 a buffer before the end, resubmit until the total is reached
case "${{RV_TOTAL_ELAPSED:-}}" in ''|*[!0-9]*) RV_TOTAL_ELAPSED=0 ;; esac
case "${{RV_SEGMENT:-}}" in ''|*[!0-9]*) RV_SEGMENT=1 ;; esac
export RV_TOTAL_ELAPSED RV_SEGMENT
_rv_total={total}
_rv_buffer=${{RV_CKPT_BUFFER:-{CHECKPOINT_BUFFER_S}}}
case "$_rv_buffer" in ''|*[!0-9]*) _rv_buffer={CHECKPOINT_BUFFER_S} ;; esac
_rv_seg0=$(date +%s)
_rv_wall=$((_rv_end - _rv_seg0))
_rv_tmo=$((_rv_wall - _rv_buffer))
_rv_rest=$((_rv_total - RV_TOTAL_ELAPSED))
if [ "$_rv_rest" -lt "$_rv_tmo" ]; then _rv_tmo=$_rv_rest; fi
if [ "$_rv_tmo" -lt 1 ]; then
  echo "[rv] walltime too short for a ${{_rv_buffer}}s checkpoint buffer; using half of the remaining time" >&2
  _rv_tmo=$((_rv_wall / 2)); [ "$_rv_tmo" -ge 1 ] || _rv_tmo=1
fi
_rv_killafter=$((_rv_buffer / 2)); [ "$_rv_killafter" -le 300 ] || _rv_killafter=300; [ "$_rv_killafter" -ge 5 ] || _rv_killafter=5
echo "[rv] checkpoint segment $RV_SEGMENT: ${{RV_TOTAL_ELAPSED}}s of ${{_rv_total}}s done; SIGUSR1 after ${{_rv_tmo}}s"
"""


def _checkpoint_epilogue(s: Strategy) -> str:
    return """\
_rv_new=$((RV_TOTAL_ELAPSED + $(date +%s) - _rv_seg0))
if [ "$_rv_rc" = 124 ]; then
  if [ "$_rv_new" -lt "$_rv_total" ]; then
    _rv_next=$( (
      for _rv_v in $(compgen -e); do
        case "$_rv_v" in SLURM_CONF) ;; SLURM_*|SBATCH_*|SALLOC_*) unset "$_rv_v" ;; esac
      done
      export RV_TOTAL_ELAPSED=$_rv_new RV_CLAIM_OWNER=$RV_CLAIM_OWNER RV_SEGMENT=$((RV_SEGMENT + 1))
      sbatch --parsable "$0"
    ) 2>&1 )
    _rv_nid=$(printf '%s\\n' "$_rv_next" | grep -Eo '^[0-9]+' | tail -n 1)
    if [ -n "$_rv_nid" ]; then
      printf '%s\\n' "$_rv_nid" >> "$_rv_gdir/segments"
      echo "[rv] segment done (${_rv_new}s of ${_rv_total}s); resubmitted as job $_rv_nid"
      _rv_final RESUBMITTED 0 "continues as job $_rv_nid after ${_rv_new}s of ${_rv_total}s"
      exit 0
    fi
    echo "[rv] resubmission failed: $_rv_next" >&2
    _rv_final FAILED 124 "checkpoint resubmission failed"
    exit 1
  fi
  echo "[rv] total requested time reached (${_rv_new}s of ${_rv_total}s); not resubmitting"
  _rv_final TIMEOUT 124 "total requested time reached"
  exit 0
fi"""


def _hold_block(ctx: JobContext, s: Strategy) -> str:
    rc_lines = ['[ -f ~/.bashrc ] && . ~/.bashrc']
    rc_lines += export_lines(auto_env(ctx, s))
    if ctx.env_file:
        rc_lines.append(f"if [ -f {q(ctx.env_file)} ]; then . {q(ctx.env_file)}; fi")
    if ctx.venv:
        act = f"{ctx.venv.rstrip('/')}/bin/activate"
        rc_lines.append(f"if [ -f {q(act)} ]; then . {q(act)}; fi")
    if ctx.work_dir:
        rc_lines.append(f"cd -- {q(ctx.work_dir)} 2>/dev/null || true")
    rc = "\n".join(rc_lines) + "\n"
    return f"""\
# --- interactive hold: keep the allocation until cancelled or the time limit; `rv up` attaches
( umask 077; printf '%s' {q(rc)} > "$_rv_gdir/attach-$SLURM_JOB_ID.rc" )
echo "[rv] holding job $SLURM_JOB_ID on $(hostname) for interactive use"
_rv_run sleep infinity; _rv_rc=$?
exit $_rv_rc
"""


def build_script(ctx: JobContext, strategy: Strategy) -> str:
    """The complete sbatch script for one strategy of a race group."""
    _check_context(ctx)
    ctx = _with_safe_name(ctx)
    kind = template_kind(ctx, strategy)
    parts = ["#!/bin/bash", *_directives(ctx, strategy, kind),
             f"# generated by rv ({kind} template, strategy {strategy.id}); do not edit", "",
             "_rv_t0=$(date +%s)", claim_block(ctx)]
    if ctx.mail_user:
        parts.append(mail_shell())
    parts.append(_env_block(ctx, strategy))
    if ctx.notify is not None:
        parts.append(notify_shell(ctx.notify, job_name=ctx.name, group_id=ctx.group_id))
        parts.append('if [ "$_rv_restart" -gt 0 ]; then _rv_notify REQUEUED 0 '
                     '"requeued by Slurm; restart $_rv_restart runs the command again"; fi\n')
    parts.append(_end_time_block(strategy))
    parts.append(_traps_block(ctx, kind))
    parts.append(_setup_block(ctx))
    if kind == "interactive":
        parts.append(_hold_block(ctx, strategy))
    else:
        parts.append(_run_block(ctx, strategy, kind))
    return "\n".join(parts)


def _with_safe_name(ctx: JobContext) -> JobContext:
    safe = sanitize_job_name(ctx.name)
    if safe == ctx.name:
        return ctx
    from dataclasses import replace
    return replace(ctx, name=safe)


def build_submission(ctx: JobContext, strategy: Strategy) -> JobSubmission:
    """Script plus the structured fields the cluster implementations and the store read."""
    script = build_script(ctx, strategy)
    ctx = _with_safe_name(ctx)
    kind = template_kind(ctx, strategy)
    logs = RemotePaths(ctx.scratch).logs_dir
    return JobSubmission(
        script=script,
        name=ctx.name,
        partition=strategy.partition,
        nodes=strategy.nodes,
        gpus_per_node=strategy.gpus_per_node,
        gpu_type=strategy.gpu_type,
        walltime_s=strategy.walltime_s,
        time_min_s=strategy.time_min_s,
        command=ctx.command,
        group_id=ctx.group_id,
        stdout_path=f"{logs}/%x-%j.out",
        stderr_path=f"{logs}/%x-%j.err",
        checkpoint_total_s=(strategy.total_time_s or strategy.walltime_s) if kind == "checkpoint" else None,
        meta={
            "template": kind,
            "strategy_id": strategy.id,
            "comment": group_comment(ctx.group_id),
            "per_node_logs": strategy.nodes > 1 and kind != "interactive",
            "checkpoint_buffer_s": CHECKPOINT_BUFFER_S if kind == "checkpoint" else None,
        },
    )
