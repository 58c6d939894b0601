"""Keep the control-loop lease while a tick runs.

A tick can block for minutes inside one backend call (an Azure VM takes minutes to create; a stop waits
out its grace period). Renewing only between calls would let the lease expire mid-launch: a second loop
would take over, find the job LAUNCHING with an attempt no backend lists yet, requeue it and launch a
second attempt while the first one comes up — the job would run twice. So a heartbeat thread renews
the lease every ``ttl / 3`` for as long as the tick runs, up to ``max_hold_s``: a tick stuck longer than
that (a hung backend call) stops renewing, so another loop can take over.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

MAX_HOLD_S = 1800.0  # the longest a single tick may keep the lease alive by heartbeats


class LeaseHeartbeat:
    """``with LeaseHeartbeat(renew, ttl):`` renews in the background; ``lost`` is set when a renewal
    fails (another holder, or the database unreachable) or the hold limit is reached."""

    def __init__(self, renew: Callable[[], bool], ttl_s: float, max_hold_s: float = MAX_HOLD_S) -> None:
        self._renew = renew
        self._interval = max(ttl_s / 3.0, 0.05)
        self._max_hold_s = max_hold_s
        self._done = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        waited = 0.0
        while not self._done.wait(self._interval):
            waited += self._interval
            if waited > self._max_hold_s:
                self.lost.set()
                return
            try:
                held = self._renew()
            except Exception:  # the database is unreachable: we cannot know we still lead
                held = False
            if not held:
                self.lost.set()
                return
