"""Slurm pending reasons in plain language.

squeue says ``(Resources)`` or ``(QOSMaxGRESPerUser)``; researchers want "waiting for free GPUs"
or "your QOS GPU limit".  One table here so ``rv ps``, the race output and the TUI's jobs pane say
the same thing.
"""

from __future__ import annotations

#: Slurm reason code -> short plain-language text.
REASON_TEXT: dict[str, str] = {
    "Resources": "waiting for resources",
    "Priority": "waiting behind higher-priority jobs",
    "Dependency": "waiting for a dependency",
    "DependencyNeverSatisfied": "dependency can never be satisfied",
    "BeginTime": "waiting for its start time",
    "JobHeldUser": "held by you",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "requested nodes unavailable (maintenance or down)",
    "PartitionDown": "partition is down",
    "PartitionInactive": "partition is inactive",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "PartitionTimeLimit": "walltime over the partition limit",
    "Reservation": "waiting for a reservation",
    "ReservationDeleted": "its reservation was deleted",
    "NodeDown": "a needed node is down",
    "BadConstraints": "constraints cannot be satisfied",
    "InvalidQOS": "invalid QOS",
    "InvalidAccount": "invalid account",
    "AssocGrpGRES": "waiting: your account's GPUs are all in use (its group limit); starts when "
                    "jobs of the account end",
    "AssocMaxGRESPerJob": "over the account's per-job GPU limit: it will never start; cancel it "
                          "and ask for fewer GPUs",
    "AssocGrpCpuLimit": "account CPU limit reached",
    "AssocMaxJobsLimit": "account job-count limit reached",
    "AssocGrpBillingMinutes": "account out of service units",
    "QOSMaxGRESPerUser": "waiting: you already use your per-user GPU limit for this type; "
                         "starts when your other jobs of this type end",
    "QOSMaxGRESPerJob": "over the per-job GPU limit for this type: it will never start; cancel "
                        "it and ask for fewer GPUs",
    "QOSMaxGRESPerNode": "over the per-node GPU limit: it will never start as asked",
    "QOSMaxGRESPerAccount": "waiting: your account already uses its GPU limit for this type",
    "QOSMaxTRESPerUser": "waiting: you are at a per-user limit; starts when your other jobs end",
    "QOSMaxTRESPerJob": "over a per-job limit: it will never start; cancel and ask for less",
    "QOSMaxGRESMinutesPerJob": "over the GPU-time limit per job: ask for fewer GPUs or less time",
    "QOSMaxCpuPerUserLimit": "QOS limit: CPUs per user",
    "QOSMaxJobsPerUserLimit": "QOS limit: jobs per user",
    "QOSMaxSubmitJobPerUserLimit": "QOS limit: submitted jobs per user",
    "QOSMaxNodePerUserLimit": "QOS limit: nodes per user",
    "QOSGrpGRES": "waiting: the QOS's GPUs are all in use (group limit)",
    "QOSMaxWallDurationPerJobLimit": "QOS limit: walltime",
    "QOSResourceLimit": "QOS limit",
    "QOSJobLimit": "QOS limit: jobs",
    "MaxGRESPerAccount": "account GPU limit reached",
    "launch failed requeued held": "launch failed; held",
    "BeginTimeNotSet": "waiting",
    "Cleaning": "node is being cleaned up",
    "Prolog": "running prolog",
    "FrontEndDown": "front end down",
    "NonZeroExitCode": "exited with a non-zero code",
    "TimeLimit": "hit its time limit",
    "None": "just submitted",
}


def reason_text(reason: str | None) -> str:
    """Plain-language text for a Slurm pending reason (unknown codes are shown as they are)."""
    if not reason:
        return ""
    reason = reason.strip().strip("()")
    if reason in REASON_TEXT:
        return REASON_TEXT[reason]
    # "ReqNodeNotAvail, UnavailableNodes:..." and similar compound reasons
    head = reason.split(",", 1)[0].strip()
    if head in REASON_TEXT:
        return REASON_TEXT[head]
    if head.startswith("QOS") and "PerJob" in head:
        return f"over a per-job QOS limit ({head}): it will never start as asked"
    if head.startswith("QOS"):
        return f"waiting on a QOS limit ({head})"
    if head.startswith("Assoc"):
        return f"account limit ({head})"
    return reason


#: Final states in plain words (what ``rv ps -a`` and the TUI say next to the state).
FINAL_TEXT: dict[str, str] = {
    "TIMEOUT": "hit its time limit",
    "OUT_OF_MEMORY": "ran out of memory (over its --mem)",
    "NODE_FAIL": "a node it ran on failed",
    "PREEMPTED": "preempted by a higher-priority job",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "missed its deadline",
    "REQUEUED": "requeued by Slurm",
}


def final_text(state: str, exit_code: int | None, exit_signal: int | None,
               restarts: int = 0) -> str:
    """``exit 3``, ``killed by signal 9``, ``cancelled``, ``hit its time limit`` ... for a job
    that ended, plus ``requeued 2x`` when Slurm restarted it."""
    if state == "CANCELLED":
        text = "cancelled"
    elif state in FINAL_TEXT:
        text = FINAL_TEXT[state]
    elif exit_signal:
        text = f"killed by signal {exit_signal}"
    elif exit_code is not None:
        text = f"exit {exit_code}"
    else:
        text = ""
    if restarts:
        text += (", " if text else "") + f"requeued {restarts}x"
    return text
