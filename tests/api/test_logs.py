"""stream_log: follows a growing file and ends once the attempt is over and the tail is sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from overcast.api.logs import stream_log


def test_follow_streams_appended_lines_then_ends(tmp_path: Path) -> None:
    log = tmp_path / "rank0.log"
    log.write_text("start\n")
    over = {"done": False}

    async def writer() -> None:
        for i in range(3):
            await asyncio.sleep(0.02)
            with log.open("a") as f:
                f.write(f"step {i}\n")
        with log.open("a") as f:
            f.write("saved checkpoint\n")  # written just before the attempt ends: must not be lost
        over["done"] = True

    async def reader() -> bytes:
        chunks = [
            c async for c in stream_log(log, follow=True, done=lambda: over["done"], poll_seconds=0.005)
        ]
        return b"".join(chunks)

    async def both() -> bytes:
        got, _ = await asyncio.wait_for(asyncio.gather(reader(), writer()), timeout=10)
        return got

    assert asyncio.run(both()).decode() == "start\nstep 0\nstep 1\nstep 2\nsaved checkpoint\n"


def test_without_follow_returns_what_is_there(tmp_path: Path) -> None:
    log = tmp_path / "rank0.log"
    log.write_bytes(b"x" * 200_000)

    async def read() -> bytes:
        return b"".join([c async for c in stream_log(log, follow=False, done=lambda: False)])

    assert asyncio.run(read()) == b"x" * 200_000
