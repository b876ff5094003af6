"""The demo cluster's state, saved between ``rv --demo`` commands.

Why: each CLI command is a new process.  Without this, ``rv --demo run ...`` followed by
``rv --demo ps`` would show an empty queue, which is not how a cluster behaves.  So the simulation
(scheduler, jobs, files, RNG state) is pickled to ``rv_home()/demo/state.pickle`` when the cluster
closes and loaded by the next one, whose clock continues from the saved simulated time plus the
real time in between times the speed it ran at (at most :data:`MAX_CATCHUP_S` are simulated; a
longer gap jumps over the rest so opening after a week stays instant).

The file is our own, in the user's own rv home, written 0600 through ``atomic_write``; it is only
unpickled when it is a private file of the current user.  It starts with a one-line JSON header so
compatibility (format, code version, seed, user) is decided before anything is unpickled.  Any
problem means a fresh start with one line on stderr, never a crash.  ``RV_DEMO_RESET=1`` (or
deleting the directory) starts fresh on purpose.  Two demo processes at once (the TUI open while
a CLI command runs): the last one to close wins, and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rv_tui.fsutil import atomic_write

from .sim import Simulation

#: Bump when the saved layout changes in a way the code fingerprint would not catch.
STATE_FORMAT = 1
STATE_DIR = "demo"
STATE_FILE = "state.pickle"
#: Environment variable that makes the next demo start from a fresh simulation.
RESET_ENV = "RV_DEMO_RESET"
#: Most simulated seconds replayed when a saved demo is opened again (the rest is jumped over).
MAX_CATCHUP_S = 24 * 3600.0


def notice(message: str) -> None:
    """One line on stderr (the CLI's channel for side remarks; the TUI has not started yet)."""
    print(f"rv: demo: {message}", file=sys.stderr)


def state_path(persist: bool | str | os.PathLike[str]) -> Path | None:
    """Where the state lives: ``rv_home()/demo/state.pickle``, or inside an explicit directory."""
    if persist is False or persist is None:
        return None
    if persist is True:
        from rv_tui.config import rv_home

        return rv_home() / STATE_DIR / STATE_FILE
    return Path(persist) / STATE_FILE


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the demo package's sources: state pickled by other code is never loaded."""
    h = hashlib.sha256(str(STATE_FORMAT).encode())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def reset_requested() -> bool:
    return os.environ.get(RESET_ENV, "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class Loaded:
    """A saved simulation and what is known about the session that saved it."""

    sim: Simulation
    seed: int
    saved_at: float  # wall-clock epoch seconds
    speed: float  # simulated seconds per real second of the session that saved it


def stamp(path: Path) -> int | None:
    """The file's modification stamp (to notice another demo process saving meanwhile)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def save(path: Path, sim: Simulation, *, seed: int, user: str, background: bool, speed: float) -> None:
    """Write the state atomically (0600): JSON header line, then the pickled simulation."""
    header = {"format": STATE_FORMAT, "code": code_fingerprint(), "seed": seed, "user": user,
              "background": background, "sim_t": sim.t, "saved_at": time.time(), "speed": speed}
    payload = json.dumps(header).encode() + b"\n" + pickle.dumps(sim, protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write(path, payload, 0o600)


def load(path: Path, *, seed: int | None, user: str, background: bool) -> Loaded | None:
    """The saved simulation if it is present, private, intact and compatible; else None (with a
    notice when something was there but cannot be used)."""
    if reset_requested():
        if path.exists():
            notice(f"{RESET_ENV} is set: starting a fresh simulation")
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        notice(f"cannot read {path} ({exc.strerror}); starting a fresh simulation")
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        notice(f"ignoring {path}: not a private file of yours; starting a fresh simulation")
        return None
    try:
        raw = path.read_bytes()
        head, sep, body = raw.partition(b"\n")
        header = json.loads(head)
        if not sep or not isinstance(header, dict):
            raise ValueError("no header")
    except (OSError, ValueError) as exc:
        notice(f"saved state {path} is unreadable ({type(exc).__name__}); starting a fresh simulation")
        return None
    if header.get("format") != STATE_FORMAT or header.get("code") != code_fingerprint():
        notice("saved state is from another version of rv; starting a fresh simulation")
        return None
    if header.get("user") != user or header.get("background") != background:
        return None  # another kind of demo (tests, custom users): not ours to resume
    if seed is not None and header.get("seed") != seed:
        notice(f"--seed {seed} differs from the saved simulation's seed {header.get('seed')}; "
               "starting a fresh simulation")
        return None
    try:
        sim = pickle.loads(body)
        if not isinstance(sim, Simulation):
            raise TypeError(type(sim).__name__)
        loaded = Loaded(sim=sim, seed=int(header["seed"]), saved_at=float(header["saved_at"]),
                        speed=max(0.0, float(header["speed"])))
    except Exception as exc:  # noqa: BLE001 - a damaged file must never stop the demo
        notice(f"saved state {path} is damaged ({type(exc).__name__}); starting a fresh simulation")
        return None
    return loaded


def catch_up(loaded: Loaded, *, now: float | None = None) -> tuple[float, float]:
    """Advance a loaded simulation over the time that passed; returns (simulated, skipped) seconds."""
    wall = time.time() if now is None else now
    gap = max(0.0, wall - loaded.saved_at) * loaded.speed
    run = min(gap, MAX_CATCHUP_S)
    loaded.sim.advance_to(loaded.sim.t + run)
    return run, gap - run


__all__ = ["MAX_CATCHUP_S", "RESET_ENV", "Loaded", "catch_up", "code_fingerprint", "load",
           "notice", "reset_requested", "save", "stamp", "state_path"]
