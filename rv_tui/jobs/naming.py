"""Job names: explicit, AI-suggested, or a heuristic read off the command; always Slurm-safe.

Why: a job name ends up in ``#SBATCH -J``, log file names, checkpoint directories and the
notification payload.  The original passed ``--name`` through unvalidated (spaces and quotes broke
the script) and its heuristic named ``python -u train.py`` "rv-job".  Every name leaving this
module is made of ``[A-Za-z0-9._-]`` only, starts with an alphanumeric and is at most
:data:`MAX_NAME_LEN` characters.

AI naming uses only the standard library (urllib in a worker thread) with a short timeout; any
failure falls back to the heuristic, so naming never blocks or fails a submission.  The command
sent to the provider is masked first (:func:`rv_tui.masking.mask_secrets`: the ``rv env`` values
the caller passes, the API key itself, URL credentials, ``KEY=value`` secrets, ``sk-``/``hf_``/
``ghp_``-style tokens): a name needs the shape of the command, never its credentials.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import urllib.request
from collections.abc import Iterable
from typing import Any

from rv_tui.masking import mask_secrets

__all__ = [
    "MAX_NAME_LEN", "ai_provider", "build_ai_request", "choose_job_name", "heuristic_name",
    "masked_command", "parse_ai_response", "sanitize_job_name", "suggest_ai_name",
]

MAX_NAME_LEN = 48
_DEFAULT = "rv-job"

ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
OPENAI_MODEL = "gpt-4o-mini"

#: launcher words skipped when looking for the interesting part of a command
_LAUNCHERS = frozenset({
    "python", "python3", "py", "uv", "run", "torchrun", "accelerate", "launch", "deepspeed",
    "bash", "sh", "zsh", "exec", "env", "nohup", "time", "srun", "mpirun", "mpiexec", "sudo",
    "nice", "stdbuf", "xvfb-run", "apptainer", "singularity", "poetry", "pixi", "conda",
})
#: python interpreter flags that take no value (``python -u train.py`` -> train)
_PY_NOARG = frozenset({"-u", "-O", "-OO", "-B", "-E", "-s", "-S", "-I", "-q", "-b", "-bb",
                       "-d", "-v", "-x", "-i", "-P", "-R"})
_SCRIPT_EXT = (".py", ".sh", ".ipynb", ".jl", ".r", ".R", ".pl", ".rb", ".lua", ".js")
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&"})


def sanitize_job_name(name: str) -> str:
    """Make *name* safe for ``#SBATCH -J``, file names and JSON: ``[A-Za-z0-9._-]``, <= 48 chars.

    Unsafe runs become one ``-``; leading/trailing punctuation is dropped; an empty result becomes
    ``rv-job``.
    """
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip())
    s = re.sub(r"-{2,}", "-", s)
    s = s.strip("-._")
    s = s[:MAX_NAME_LEN].rstrip("-._")
    return s or _DEFAULT


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return re.sub(r"-{2,}", "-", s)


def _prefixed(core: str, limit: int = 24) -> str:
    core = _slug(core)[:limit].strip("-")
    return sanitize_job_name(f"rv-{core}") if core else _DEFAULT


def _tokens(command: str) -> list[str]:
    try:
        toks = shlex.split(command, comments=False)
    except ValueError:
        toks = command.split()
    out: list[str] = []
    for t in toks:  # split glued separators like "a.py;" or "x&&y" roughly
        out.extend(p for p in re.split(r"(&&|\|\||;|\|)", t) if p)
    return out


def _stem(token: str) -> str:
    base = token.rstrip("/").rsplit("/", 1)[-1]
    if "." in base:
        base = base.rsplit(".", 1)[0] or base
    return base


def heuristic_name(command: str | None) -> str:
    """A readable name from the command (``python -u train.py --lr 3e-4`` -> ``rv-train``).

    Order: the first script-looking token (``*.py``, ``*.sh``, ...), else ``-m module`` (last
    dotted part), else ``make <target>``, else the first word that is not a launcher, flag,
    ``VAR=value`` or flag value.  No command means an interactive allocation.
    """
    if command is None or not command.strip():
        return "rv-interactive"
    toks = _tokens(command)
    for t in toks:
        if not t.startswith("-") and "=" not in t and t.endswith(_SCRIPT_EXT):
            return _prefixed(_stem(t))
    for i, t in enumerate(toks[:-1]):
        if t == "-m" and toks[i + 1] and not toks[i + 1].startswith("-"):
            mod = toks[i + 1].split(".")
            core = mod[-1] if mod[-1] not in ("__main__", "main", "run", "cli") or len(mod) == 1 else mod[-2]
            return _prefixed(core)
    for i, t in enumerate(toks):
        if t == "make":
            target = next((x for x in toks[i + 1:] if not x.startswith("-") and "=" not in x), None)
            return _prefixed(f"make-{target}" if target else "make")
    skip_next = False
    prev_python = False
    for t in toks:
        if skip_next:
            skip_next = False
            continue
        if t in _SEPARATORS:
            prev_python = False
            continue
        base = t.rsplit("/", 1)[-1]
        if base in _LAUNCHERS or re.fullmatch(r"python\d(\.\d+)?", base):
            prev_python = base.startswith("python") or base == "py" or prev_python
            continue
        if t.startswith("-"):
            if "=" in t or (prev_python and t in _PY_NOARG):
                continue
            if prev_python and t in ("-c",):
                return _prefixed("python-c")
            skip_next = True  # a flag's value (heuristic)
            continue
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", t):
            continue
        return _prefixed(_stem(t) if ("/" in t or "." in t) else t)
    return _DEFAULT


# ----------------------------------------------------------------------------- AI naming


def ai_provider(api_key: str) -> str:
    """``anthropic`` for ``sk-ant-`` keys, else ``openai`` (the seeds' prefix rule)."""
    return "anthropic" if api_key.startswith("sk-ant-") else "openai"


def masked_command(command: str, api_key: str | None = None, secret_values: Iterable[str] = ()) -> str:
    """The command as the provider may see it: every secret rv knows of masked."""
    return mask_secrets(command, [*secret_values, *([api_key] if api_key else [])])


def _prompt(command: str) -> str:
    return ("Give a short 2-4 word descriptive name for this HPC job command. Lowercase, words "
            "joined by hyphens, reply with the name only.\nCommand: " + command[:2000])


def build_ai_request(command: str, api_key: str, *, base_url: str | None = None,
                     secret_values: Iterable[str] = ()) -> urllib.request.Request:
    """The HTTP request asking the provider for a name (no network here; tests inspect it).

    The command is masked here (:func:`masked_command`), so no caller can send it raw."""
    command = masked_command(command, api_key, secret_values)
    provider = ai_provider(api_key)
    if provider == "anthropic":
        url = (base_url.rstrip("/") + "/v1/messages") if base_url else ANTHROPIC_URL
        body: dict[str, Any] = {
            "model": ANTHROPIC_MODEL, "max_tokens": 20,
            "messages": [{"role": "user", "content": _prompt(command)}],
        }
        headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
    else:
        url = (base_url.rstrip("/") + "/v1/chat/completions") if base_url else OPENAI_URL
        body = {
            "model": OPENAI_MODEL, "max_tokens": 20, "temperature": 0.3,
            "messages": [{"role": "user", "content": _prompt(command)}],
        }
        headers = {"Authorization": f"Bearer {api_key}"}
    headers["content-type"] = "application/json"
    return urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")


def parse_ai_response(provider: str, payload: bytes) -> str | None:
    """The name from a provider's JSON answer, sanitised and prefixed ``rv-``; None if unusable."""
    try:
        data = json.loads(payload)
        if provider == "anthropic":
            text = "".join(c.get("text", "") for c in data.get("content", []) if isinstance(c, dict))
        else:
            text = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    if not isinstance(text, str):
        return None
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    core = _slug(line)[:20].strip("-")
    if not core:
        return None
    if core.startswith("rv-"):
        core = core[3:]
    return sanitize_job_name(f"rv-{core}")


def _fetch(req: urllib.request.Request, timeout: float) -> bytes:
    # no proxies from the environment: the key must go to the provider only
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as resp:
        return resp.read(65536)


async def suggest_ai_name(command: str, api_key: str, *, timeout: float = 3.0,
                          base_url: str | None = None, secret_values: Iterable[str] = ()) -> str | None:
    """Ask the provider for a name (secrets masked); None on any error or after *timeout* seconds."""
    req = build_ai_request(command, api_key, base_url=base_url, secret_values=secret_values)
    try:
        payload = await asyncio.wait_for(asyncio.to_thread(_fetch, req, timeout), timeout)
    except Exception:  # timeouts, HTTP errors, DNS, TLS: naming must never fail a submission
        return None
    return parse_ai_response(ai_provider(api_key), payload)


async def choose_job_name(command: str | None, *, explicit: str | None = None, ai_naming: bool = False,
                          api_key: str | None = None, timeout: float = 3.0,
                          base_url: str | None = None, secret_values: Iterable[str] = ()) -> str:
    """``--name`` if given, else an AI name (if enabled and keyed), else :func:`heuristic_name`.

    ``secret_values`` (the ``rv env`` values) are masked in what the provider sees."""
    if explicit and explicit.strip():
        return sanitize_job_name(explicit)
    if command and ai_naming and api_key:
        name = await suggest_ai_name(command, api_key, timeout=timeout, base_url=base_url,
                                     secret_values=secret_values)
        if name:
            return name
    return heuristic_name(command)
