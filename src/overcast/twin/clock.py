"""A discrete-event virtual clock: a heap of (time, sequence, callback).

The sequence number breaks ties in insertion order, so a run is deterministic for a given seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class VirtualClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events_processed = 0

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` at virtual time ``when`` (never in the past)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, callback, args))

    def after(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, callback, *args)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, until: float) -> None:
        """Process every event due at or before ``until``, then set the clock to ``until``."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, callback, args = heapq.heappop(heap)
            self.now = when
            callback(*args)
            self.events_processed += 1
        self.now = max(self.now, until)

    def __len__(self) -> int:
        return len(self._heap)
