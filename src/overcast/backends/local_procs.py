"""Process-group helpers for the local backend: liveness through /proc, signals, bounded waits.

Liveness is read from /proc rather than from ``Popen`` so that a backend restarted after a crash can
judge processes it did not start itself. Zombies count as ended: an orphan's zombie may never be reaped
when PID 1 does not reap (as in some containers).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

from overcast.backends.local_runner import process_start_time


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing): flock, so it holds across processes and
    across backend objects of one process alike, and the kernel drops it when its holder dies."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def alive(pid: int, start: int | None) -> bool:
    """The process ``pid`` that started at ``start`` still runs (not a zombie, not a reused pid)."""
    now_start = process_start_time(pid)
    return now_start is not None and (start is None or now_start == start)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_groups(pgids: list[int], grace_seconds: float, reap: Sequence[subprocess.Popen] = ()) -> None:
    """SIGTERM every group, wait up to the grace period for them to end, then SIGKILL what is left."""
    for pgid in pgids:
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + max(0.0, grace_seconds)
    left = list(pgids)
    while left:
        for proc in reap:
            proc.poll()  # reap our own children so they do not linger as zombies
        left = [pgid for pgid in left if group_members(pgid)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for pgid in left:
        signal_group(pgid, signal.SIGKILL)
    for proc in reap:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)


@cache
def real_gpu_count() -> int:
    """GPUs on this machine (``nvidia-smi -L``), 0 when there are none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))
