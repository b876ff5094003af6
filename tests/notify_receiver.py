"""A local webhook receiver for notification tests: verifies HMAC signatures, rejects replays.

Why: notifications must be proven end to end (the job on a fake node signs and posts, something
checks the signature) without any network beyond 127.0.0.1.  The fake nodes of the local Slurm
cluster are this host, so jobs reach the receiver at 127.0.0.1.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rv_tui.jobs.notify import verify


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    valid: bool
    status: int


@dataclass
class NotifyReceiver:
    """``with NotifyReceiver(token) as r: ... r.url ... r.wait_for(lambda evs: ...)``."""

    token: str
    received: list[Received] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                headers = {k: v for k, v in self.headers.items()}
                ok = verify(recv.token, headers, raw)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                nonce = str(body.get("nonce", ""))
                with recv._cond:
                    replay = ok and (not nonce or nonce in recv._seen)
                    if ok and not replay:
                        recv._seen.add(nonce)
                    status = 204 if ok and not replay else 403
                    recv.received.append(Received(body, headers, ok and not replay, status))
                    recv._cond.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/notify"

    def __enter__(self) -> "NotifyReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def valid_events(self, job_name: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [r.body for r in self.received
                    if r.valid and (job_name is None or r.body.get("job_name") == job_name)]

    def wait_for(self, pred, timeout: float = 60.0) -> bool:
        """Wait until ``pred(valid_bodies)`` holds; a deadline, not a timed assertion."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                bodies = [r.body for r in self.received if r.valid]
                if pred(bodies):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
