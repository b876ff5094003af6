"""Signed job notifications: what a job posts to the user's webhook, and how a receiver checks it.

Why: the original signed ``user:job:event:epoch`` with an HMAC key hard-coded in the public
client, so anyone could forge mail to anyone; its final notifications were backgrounded ``curl``s
that died with the job, and Slurm kills (TIMEOUT, scancel) sent nothing.  Here:

* the key is the user's own ``notifications.token`` from config; it reaches the job only inside
  the (0600) batch script as an unexported shell variable and is piped to the signer on stdin, so
  it never shows in ``ps`` or in logs;
* the whole JSON body is signed together with a timestamp (``X-Rv-Timestamp``), and the body
  carries a random nonce: receivers reject stale timestamps and replays (:func:`verify`);
* the post runs in the foreground with a short timeout, from traps that also fire when Slurm
  signals the job (see :mod:`rv_tui.jobs.templates`).

On the node the signer is ``python3 -I`` (JSON, HMAC and POST from the standard library); where
there is no python3 a pure-shell fallback computes the HMAC with ``sha256sum`` and posts with
``curl``, so ``openssl`` is never needed.  curl reads the webhook URL (which may carry a secret)
from a config on its stdin (``-K -``) and the body from a 0600 temp file, never from its argv.

Email is Slurm's own: with ``notifications.email`` the job carries ``--mail-user``, and the job
that wins its race switches on ``MailType=END,FAIL,TIME_LIMIT,REQUEUE`` for itself
(:data:`MAIL_TYPES`) right after claiming, so a race of twelve strategies sends one mail, not a
"CANCELLED" mail per loser.  :func:`ended_jobs` tells a face which of your jobs just ended.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rv_tui.quoting import q

if TYPE_CHECKING:
    from rv_tui.cluster.base import JobInfo

__all__ = [
    "EVENTS", "MAIL_TYPES", "NotifySettings", "SIG_HEADER", "TS_HEADER", "MAX_SKEW_S", "ended_jobs",
    "mail_shell", "mail_user", "notify_shell", "sign", "verify",
]

#: events a job can post (seeds: COMPLETED, FAILED, TIMEOUT, RESUBMITTED)
EVENTS = ("COMPLETED", "FAILED", "TIMEOUT", "RESUBMITTED")
TS_HEADER = "X-Rv-Timestamp"
SIG_HEADER = "X-Rv-Signature"
MAX_SKEW_S = 300
POST_TIMEOUT_S = 5
#: Slurm mail events for the winning job (ended, failed, hit its time limit, was requeued).
MAIL_TYPES = "END,FAIL,TIME_LIMIT,REQUEUE"


def mail_user(config: Any) -> str | None:
    """The address Slurm mails when notifications are on and ``notifications.email`` is set."""
    n = getattr(config, "notifications", None)
    if n is None or not n.enabled or not n.email:
        return None
    return str(n.email)


def mail_shell() -> str:
    """Job-script lines, run only by the race's winner: ask Slurm to mail about this job."""
    return (
        "# --- mail: only the winner asks Slurm for mail (#SBATCH --mail-user names the address),\n"
        "# so cancelled or losing siblings never send any; retried in the background for a minute\n"
        "# (a slurmctld restart must neither lose the mail nor delay the command)\n"
        "( for _rv_m in 1 2 3 4 5 6; do\n"
        f'    scontrol update JobId="$SLURM_JOB_ID" MailType={MAIL_TYPES} >/dev/null 2>&1 && exit 0\n'
        "    sleep 10\n"
        '  done; echo "[rv] warning: could not switch on Slurm mail for this job" >&2 ) &\n'
    )


def ended_jobs(before: Iterable["JobInfo"], now: Iterable["JobInfo"]) -> list["JobInfo"]:
    """Jobs that had started in ``before`` and are now finished or gone from the queue (a queue
    listing drops finished jobs); pending jobs that vanish (cancelled losers) are not news."""
    cur = {j.job_id: j for j in now}
    out = []
    for j in before:
        if not j.has_started:
            continue
        later = cur.get(j.job_id)
        if later is None or later.is_terminal:
            out.append(later or j)
    return out


@dataclass(frozen=True)
class NotifySettings:
    """Where and as whom a job reports; ``token`` is the user's HMAC key (never printed)."""

    url: str
    token: str
    user: str
    email: str | None = None

    def __repr__(self) -> str:  # keep the token out of tracebacks and logs
        return f"NotifySettings(url={self.url!r}, token='***', user={self.user!r}, email={self.email!r})"


def sign(token: str | bytes, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex>`` HMAC of ``b"<timestamp>." + body`` under the user's token."""
    key = token.encode() if isinstance(token, str) else token
    mac = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify(token: str | bytes, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
           max_skew: int = MAX_SKEW_S) -> bool:
    """True if the body's signature matches and its timestamp is fresh (replays within the window
    are the receiver's to reject by the body's ``nonce``)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ts = lower.get(TS_HEADER.lower(), "")
    sig = lower.get(SIG_HEADER.lower(), "")
    if not re.fullmatch(r"\d{1,12}", ts):
        return False
    if abs((time.time() if now is None else now) - int(ts)) > max_skew:
        return False
    try:
        inner = json.loads(body)
    except ValueError:
        return False
    if not isinstance(inner, dict) or str(inner.get("timestamp")) != ts:
        return False
    return hmac.compare_digest(sign(token, ts, body), sig)


# The signer/poster run on the compute node.  Inputs come from the environment (not argv), the
# key from stdin.  Output never includes the key or the URL (webhook URLs can carry secrets).
_PY = r"""
import hashlib, hmac, json, os, secrets, socket, sys, time, urllib.request
e = os.environ
key = sys.stdin.buffer.read()
ts = int(time.time())
def num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
body = {
    "v": 1, "event": e.get("_RV_EV", ""), "user": e.get("_RV_NUSER", ""),
    "email": e.get("_RV_NEMAIL") or None, "job_id": e.get("SLURM_JOB_ID", ""),
    "job_name": e.get("_RV_NNAME", ""), "group_id": e.get("_RV_NGROUP", ""),
    "node": socket.gethostname(), "exit_code": num(e.get("_RV_RC")),
    "reason": e.get("_RV_WHY") or None, "elapsed_s": num(e.get("_RV_ELAPSED")),
    "timestamp": ts, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts)),
    "nonce": secrets.token_hex(8),
}
data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
sig = "sha256=" + hmac.new(key, str(ts).encode() + b"." + data, hashlib.sha256).hexdigest()
req = urllib.request.Request(e["_RV_NURL"], data=data, method="POST", headers={
    "Content-Type": "application/json", "X-Rv-Timestamp": str(ts), "X-Rv-Signature": sig,
    "User-Agent": "rv-tui-job"})
try:
    with urllib.request.urlopen(req, timeout=float(e.get("_RV_NTIMEOUT", "5"))) as r:
        r.read(1024)
    print("[rv] notification %s sent" % body["event"], file=sys.stderr)
except Exception as x:
    print("[rv] notification %s not delivered (%s)" % (body["event"], type(x).__name__), file=sys.stderr)
"""


def notify_shell(settings: NotifySettings, *, job_name: str, group_id: str) -> str:
    """Shell definitions of ``_rv_notify EVENT [EXIT_CODE] [REASON]`` for the job script.

    ``job_name`` and ``group_id`` must already be safe (sanitised names/ids); everything else is
    quoted.  ``RV_NOTIFY_SHELL=1`` forces the python-less fallback (tests).
    """
    static = json.dumps({"email": settings.email, "user": settings.user, "job_name": job_name,
                         "group_id": group_id, "v": 1}, separators=(",", ":"), sort_keys=True)
    lines = [
        "# --- notifications (HMAC-SHA256 with the user's token; key never on a command line)",
        f"_rv_ntok={q(settings.token)}",
        f"_rv_nurl={q(settings.url)}",
        f"_rv_nuser={q(settings.user)}",
        f"_rv_nemail={q(settings.email or '')}",
        f"_rv_nstatic={q(static[1:-1])}",
        f"_rv_npy={q(_PY)}",
        "_rv_notify() {",
        '  local _el=$(( $(date +%s) - ${_rv_t0:-$(date +%s)} ))',
        '  if [ -z "${RV_NOTIFY_SHELL:-}" ] && command -v python3 >/dev/null 2>&1; then',
        '    printf \'%s\' "$_rv_ntok" | _RV_EV="$1" _RV_RC="${2:-}" _RV_WHY="${3:-}" _RV_ELAPSED="$_el" \\',
        '      _RV_NURL="$_rv_nurl" _RV_NUSER="$_rv_nuser" _RV_NEMAIL="$_rv_nemail" \\',
        f'      _RV_NNAME={q(job_name)} _RV_NGROUP={q(group_id)} _RV_NTIMEOUT={POST_TIMEOUT_S} \\',
        '      python3 -I -c "$_rv_npy" || true',
        '  else',
        '    _rv_notify_sh "$1" "${2:-}" "${3:-}" "$_el" || true',
        '  fi',
        "}",
        # pure-shell fallback: HMAC via sha256sum, fields are digits or our own constants
        "_rv_hexbin() { local h=$1 f=''; while [ -n \"$h\" ]; do f=\"$f\\\\x${h:0:2}\"; h=${h:2}; done; printf \"$f\"; }",
        "_rv_hmac() {",
        "  local b _x i=0 ip='' op='' inner",
        "  for b in $(printf '%s' \"$_rv_ntok\" | od -An -v -tu1); do",
        "    printf -v _x '\\\\x%02x' $(( b ^ 54 )); ip=\"$ip$_x\"; printf -v _x '\\\\x%02x' $(( b ^ 92 )); op=\"$op$_x\"; i=$((i+1))",
        "  done",
        "  while [ $i -lt 64 ]; do ip=\"$ip\\\\x36\"; op=\"$op\\\\x5c\"; i=$((i+1)); done",
        "  inner=$( { printf \"$ip\"; printf '%s' \"$1\"; } | sha256sum | cut -d' ' -f1)",
        "  { printf \"$op\"; _rv_hexbin \"$inner\"; } | sha256sum | cut -d' ' -f1",
        "}",
        "_rv_notify_sh() {",
        "  command -v curl >/dev/null 2>&1 || { echo \"[rv] notification $1 not delivered (no python3 or curl)\" >&2; return 0; }",
        "  if [ ${#_rv_ntok} -gt 64 ]; then echo \"[rv] notification $1 not delivered (token too long for the shell signer)\" >&2; return 0; fi",
        "  local ts=$(date +%s) node=$(hostname | tr -cd 'A-Za-z0-9._-') nonce=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \\n')",
        "  local rc=${2:-null} why=${3:-} body sig",
        "  case \"$rc\" in ''|*[!0-9]*) rc=null;; esac",
        "  why=$(printf '%s' \"$why\" | tr -cd 'A-Za-z0-9 ._:(),-')",
        "  [ -n \"$why\" ] && why=\"\\\"$why\\\"\" || why=null",
        "  body=\"{$_rv_nstatic,\\\"elapsed_s\\\":${4:-0},\\\"event\\\":\\\"$1\\\",\\\"exit_code\\\":$rc,\\\"job_id\\\":\\\"${SLURM_JOB_ID:-}\\\",\\\"node\\\":\\\"$node\\\",\\\"nonce\\\":\\\"$nonce\\\",\\\"reason\\\":$why,\\\"timestamp\\\":$ts}\"",
        "  sig=$(_rv_hmac \"$ts.$body\")",
        # the URL reaches curl as a config line on stdin (-K -), the body from a 0600 temp file:
        # nothing secret is ever in curl's argv (ps, /proc/*/cmdline)
        "  local bf; bf=$(umask 077; mktemp \"${TMPDIR:-/tmp}/rv-notify.XXXXXX\") || { echo \"[rv] notification $1 not delivered (no temp file)\" >&2; return 0; }",
        "  printf '%s' \"$body\" > \"$bf\"",
        "  local u=${_rv_nurl//\\\\/\\\\\\\\}; u=${u//\\\"/\\\\\\\"}",
        "  if printf 'url = \"%s\"\\n' \"$u\" | curl -sS -o /dev/null --max-time " + str(POST_TIMEOUT_S)
        + " -X POST -H 'Content-Type: application/json' -H \"X-Rv-Timestamp: $ts\" -H \"X-Rv-Signature: sha256=$sig\" --data-binary @\"$bf\" -K - 2>/dev/null; then",
        "    echo \"[rv] notification $1 sent\" >&2",
        "  else",
        "    echo \"[rv] notification $1 not delivered (curl failed)\" >&2",
        "  fi",
        "  rm -f -- \"$bf\"",
        "}",
    ]
    return "\n".join(lines) + "\n"
