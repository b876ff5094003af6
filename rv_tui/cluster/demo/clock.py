"""Simulated time for the demo cluster.

The demo runs faster than real time (``--speed``) so a race resolves in seconds, and can be frozen
(``speed=0``) and stepped with :meth:`SimClock.advance` so tests and snapshots are deterministic.
Simulated time is kept as float seconds since the Unix epoch; :func:`to_datetime` turns it into an
aware datetime in the cluster's zone (Rivanna is in America/New_York).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

CLUSTER_TZ = ZoneInfo("America/New_York")
#: Start of every seeded run: a Monday morning, so snapshots and screenshots never change.
SEEDED_START = datetime(2026, 11, 23, 9, 0, 0, tzinfo=CLUSTER_TZ)
DEFAULT_SPEED = 30.0


def to_datetime(t: float) -> datetime:
    """Simulated epoch seconds as an aware datetime in the cluster zone (whole seconds)."""
    return datetime.fromtimestamp(int(t), CLUSTER_TZ)


class SimClock:
    """``start + speed * real elapsed + manual offset``, never going backwards."""

    def __init__(self, start: float, speed: float, *, monotonic: Callable[[], float] = time.monotonic):
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.start = start
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()
        self._offset = 0.0

    def now(self) -> float:
        return self.start + self.speed * (self._monotonic() - self._t0) + self._offset

    def advance(self, seconds: float) -> None:
        """Step simulated time forward (works frozen or running)."""
        if seconds < 0:
            raise ValueError("cannot go back in time")
        self._offset += seconds
