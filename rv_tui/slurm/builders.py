"""Slurm command builders: structured arguments in, one quoted shell command string out.

Why: every remote command reaches the login shell as a string.  Building them here, only through
:mod:`rv_tui.quoting`, keeps hostile job names, paths, accounts and constraints inert, and keeps
the output formats in one place next to the parsers that read them (:mod:`rv_tui.slurm.parsers`).

Formats use the ASCII unit separator (``\\x1f``) between fields: it never occurs in node names,
partitions, GRES strings or (rv-made) job names, unlike ``|`` or spaces, and the job name, the one
free-text field, always comes last so even a name containing the separator parses.
"""

from __future__ import annotations

from collections.abc import Sequence

from rv_tui.slurm.model import ProbeSpec
from rv_tui.durations import format_slurm
from rv_tui.quoting import join, q, q_path

#: Field separator in every machine-read Slurm output.
SEP = "\x1f"

#: ``sinfo -O`` fields, in output order (see :func:`rv_tui.slurm.parsers.parse_sinfo_nodes`).
SINFO_FIELDS: tuple[str, ...] = (
    "NodeList", "Partition", "StateLong", "Gres", "GresUsed", "CPUsState", "Memory", "AllocMem",
    "Features",
)

#: ``squeue -o`` fields for job listings; the name (free text) is last on purpose.
SQUEUE_JOB_FIELDS: tuple[tuple[str, str], ...] = (
    ("job_id", "%i"), ("state", "%T"), ("partition", "%P"), ("user", "%u"), ("num_nodes", "%D"),
    ("gres", "%b"), ("nodes", "%N"), ("elapsed", "%M"), ("time_limit", "%l"),
    ("start_time", "%S"), ("submit_time", "%V"), ("reason", "%r"), ("comment", "%k"),
    ("name", "%j"),
)

#: ``squeue`` fields for per-partition queue depth (all users, aggregated on the cluster).
SQUEUE_QUEUE_FORMAT = SEP.join(("%P", "%T", "%D", "%b"))

#: The clock command: local time with numeric offset, then the zone name the login shell uses.
CLOCK_COMMAND = (
    "date +%Y-%m-%dT%H:%M:%S%z; printf '%s\\n' \"${TZ:-}\"; "
    "readlink /etc/localtime 2>/dev/null || true"
)

#: How a probe job is named (never submitted, but Slurm sees the name).
PROBE_JOB_NAME = "rv-probe"


def sinfo_nodes_command(partitions: Sequence[str] | None = None) -> str:
    """One line per (node, partition) with exact GRES and GRES_USED."""
    fmt = ",".join(f"{f}:{SEP}" for f in SINFO_FIELDS)
    argv: list[str] = ["sinfo", "-N", "-h", "-O", fmt]
    if partitions:
        argv += ["-p", ",".join(partitions)]
    return join(argv)


def squeue_queue_command() -> str:
    """Pending/running job counts per (partition, state, nodes, gres), counted on the cluster.

    ``sort | uniq -c`` keeps the transfer small on a cluster with thousands of queued jobs.
    """
    argv = ["squeue", "-h", "-a", "-t", "PENDING,RUNNING,CONFIGURING", "-o", SQUEUE_QUEUE_FORMAT]
    return join(argv) + " | sort | uniq -c"


def squeue_jobs_command(user: str | None, job_ids: Sequence[str] | None = None, *,
                        all_states: bool = False) -> str:
    """The user's jobs (or the given ids) in the :data:`SQUEUE_JOB_FIELDS` format.

    ``squeue -j`` fails when every id is unknown, so its exit status is ignored: the caller
    looks up missing ids with :func:`scontrol_jobs_command`, and reads stderr only to tell
    "Invalid job id" from a controller that did not answer.
    """
    fmt = SEP.join(code for _, code in SQUEUE_JOB_FIELDS)
    # --local: no REQUEST_FED_INFO round to slurmctld on every call (3 RPCs -> 2; 22.05 has it)
    argv: list[str] = ["squeue", "--local", "-h", "-o", fmt]
    if job_ids:
        argv += ["-j", ",".join(_check_id(j) for j in job_ids)]
    elif user:
        argv += ["-u", user]
    if all_states or job_ids:
        argv += ["-t", "all"]
    cmd = join(argv)
    # stderr is kept: "Invalid job id" is fine, anything else means Slurm did not answer
    return f"{cmd} || true" if job_ids else cmd


def squeue_restarts_command(user: str | None) -> str:
    """``JobID<SEP>RestartCnt`` of the user's jobs (``-o`` has no restart-count field)."""
    argv: list[str] = ["squeue", "--local", "-h", "-O", f"JobID:{SEP},RestartCnt:{SEP}"]
    if user:
        argv += ["-u", user]
    return join(argv) + " 2>/dev/null || true"


def scontrol_jobs_command(job_ids: Sequence[str]) -> str:
    """``scontrol show job -o`` for each id (one line each; unknown ids print an error line)."""
    ids = " ".join(q(_check_id(j)) for j in job_ids)
    return f"for j in {ids}; do scontrol show job -o \"$j\" 2>&1 || true; done"


def test_only_command(spec: ProbeSpec, *, job_name: str = PROBE_JOB_NAME) -> str:
    """``sbatch --test-only`` with the exact request shape of the job that would be submitted."""
    argv: list[str] = ["sbatch", "--test-only", "-p", spec.partition, "-N", str(spec.nodes)]
    if spec.nodes > 1:
        argv += ["--ntasks-per-node=1"]
    argv += [f"--gres={spec.gres}", "-t", format_slurm(spec.walltime_s)]
    if spec.cpus_per_task:
        argv += ["-c", str(spec.cpus_per_task)]
    if spec.mem:
        argv += [f"--mem={spec.mem}"]
    if spec.constraint:
        argv += [f"--constraint={spec.constraint}"]
    if spec.account:
        argv += ["-A", spec.account]
    argv += ["-J", job_name, "-o", "/dev/null", "--wrap", "sleep 1"]
    return join(argv) + " 2>&1"


def submit_command(script_path: str) -> str:
    """Submit a script file, remove it, and keep sbatch's exit status."""
    p = q_path(script_path)
    return f"sbatch --parsable {p}; rc=$?; rm -f {p}; exit $rc"


def scancel_command(job_ids: Sequence[str]) -> str:
    """``scancel`` for many ids; its exit status is judged by the caller (finished ids are fine)."""
    return join(["scancel", *(_check_id(j) for j in job_ids)])


def mkdir_command(path: str, mode: str = "700") -> str:
    """``mkdir -p -m MODE PATH`` (a leading ``~/`` expands remotely)."""
    return join(["mkdir", "-p", "-m", mode]) + " " + q_path(path)


def _check_id(job_id: str) -> str:
    """Job ids are digits with an optional array/het suffix; anything else is refused."""
    jid = str(job_id).strip()
    ok = jid and all(c.isdigit() or c in "_+[]-" for c in jid) and jid[0].isdigit()
    if not ok:
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return jid
