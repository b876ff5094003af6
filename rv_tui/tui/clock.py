"""One clock for the whole dashboard: every time shown says its zone, and a date when not today.

Cluster times (squeue's estimates, snapshot times) are tz-aware datetimes in the cluster's zone
(the core parses them so); the app's own times (the command log) are local epoch seconds.  Both
go through here so the header, the Commands pane and the race's "est. start" can never disagree
about what "04:57" means.
"""

from __future__ import annotations

import time
from datetime import datetime


def zone_of(dt: datetime) -> str:
    """``EST`` for a named zone, ``UTC-05:00`` for a fixed offset, ``local`` for a naive time."""
    if dt.tzinfo is None:
        return "local"
    name = dt.strftime("%Z")
    return name or "UTC" + dt.strftime("%z")


def cluster_time(dt: datetime, today: datetime | None = None, *, seconds: bool = True) -> str:
    """``14:03:22 EST``, or ``Tue 24 Nov 04:57 EST`` when ``dt`` is not on ``today``'s date
    (``today``: the cluster's current time, in the same zone)."""
    if today is not None and today.tzinfo is not None and dt.tzinfo is not None:
        today = today.astimezone(dt.tzinfo)
    hm = dt.strftime("%H:%M:%S" if seconds else "%H:%M")
    if today is not None and dt.date() != today.date():
        return f"{dt:%a} {dt.day} {dt:%b} {dt:%H:%M} {zone_of(dt)}"
    return f"{hm} {zone_of(dt)}"


def local_time(ts: float, now: float | None = None) -> str:
    """An epoch time in the local zone: ``14:03:22 UTC`` (with the date when not today)."""
    t = time.localtime(ts)
    zone = time.strftime("%Z", t) or "local"
    if now is not None and time.strftime("%Y%m%d", t) != time.strftime("%Y%m%d", time.localtime(now)):
        return time.strftime("%a %d %b %H:%M:%S ", t) + zone
    return time.strftime("%H:%M:%S ", t) + zone
