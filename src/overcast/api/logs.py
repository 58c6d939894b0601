"""Streaming a log file, optionally following it like ``tail -f`` until the attempt is over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

CHUNK = 64 * 1024
POLL_SECONDS = 0.25


async def stream_log(
    path: Path, *, follow: bool, done: Callable[[], bool], poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[bytes]:
    """Yield the file's bytes; with ``follow``, keep yielding new bytes until ``done()`` and drained.

    ``done`` is checked only when the file has nothing new, so the tail written just before the
    attempt ended is still sent. A client that disconnects cancels this generator.
    """
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if chunk:
                yield chunk
                continue
            if not follow:
                return
            if await asyncio.to_thread(done):
                tail = f.read()
                if tail:
                    yield tail
                return
            await asyncio.sleep(poll_seconds)
