"""The server's side of cloud nodes' logs (the protocol: cloud_logs.py): local copies under
``<home>/logs/<job>/<attempt>/node-<rank>.log``, the file the API streams, appended from the parts the node
uploaded to the account's ``logs_url``; ``<copy>.parts`` holds how many were copied and the copy's size
then, so a crash or a full disk never makes a part show twice.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from overcast.backends.cloud_logs import (
    END,
    log_dir,
    open_store,
    part_name,
    redact,
    scrub,
)

SYNC_EVERY_S = 2.0  # how often the server asks the store for new parts of one log, at most
SETTLE_WAIT_S = 10.0  # how long an attempt's end waits for its logs' last parts (then it is delivered)
LOCK_WAIT_S = 1.0  # a read waits this long for a sync of the same copy (stuck on the store?), then skips
PARTS_PER_SYNC = 64  # parts one sync copies at most (the rest: the next one, or in the background)


class LogCopies:
    """The server's side: local copies of the nodes' logs under ``<home>/logs``, brought up to date from
    the store at most every ``SYNC_EVERY_S`` per log, and kept up to date while an attempt runs for the
    logs someone asked for (``follow``)."""

    # in this process, no part is appended twice (two accounts may share one logs_url and one home)
    _locks = tuple(threading.Lock() for _ in range(64))
    _guard = threading.Lock()

    def __init__(self, url: str, home: Path, warn: Callable[[str], None]) -> None:
        self.url, self.home, self.warn = url, home, warn
        self._synced: dict[Path, float] = {}  # copy -> monotonic time of its last sync
        self._followed: dict[Path, tuple[str, int, str]] = {}  # copy -> (job, attempt, remote folder)
        self._over: dict[Path, Callable[[], bool]] = {}  # copy -> whether its attempt has ended

    def local(self, job_id: str, attempt: int, rank: int) -> Path:
        return self.home / "logs" / job_id / str(attempt) / f"node-{rank}.log"

    def path(
        self, job_id: str, attempt: int, rank: int, over: Callable[[], bool] | None = None
    ) -> Path | None:
        """The local copy, brought up to date (``PARTS_PER_SYNC`` parts now, the rest in the background);
        None when the node has uploaded nothing (yet). With ``over`` (whether the attempt has ended: only
        a follow passes it) the copy of a running attempt is kept up to date until it has, and exists,
        empty, before the first part; an ended attempt's read is one sync, throttled, and no thread unless
        more than ``PARTS_PER_SYNC`` parts wait (one background copy of the rest, ending when done)."""
        try:
            remote = log_dir(self.url, job_id, attempt, rank)
        except ValueError:
            return None
        local = self.local(job_id, attempt, rank)
        more = self.sync(local, remote)  # more parts: the rest in the background
        if over is not None and not quietly(over):
            return self.follow(job_id, attempt, rank, over)
        if more:
            return self.follow(job_id, attempt, rank, None)
        return local if local.exists() else None

    def follow(self, job_id: str, attempt: int, rank: int, over: Callable[[], bool] | None) -> Path:
        """Keep the copy up to date while the attempt runs (until ``over()`` or the node's ``end``), then
        copy what is left (``over`` None: only that); one thread per copy (a later ``over`` keeps it going).
        The copy exists from now on, empty until the first part: a follow waits for the job's output."""
        local, remote = self.local(job_id, attempt, rank), log_dir(self.url, job_id, attempt, rank)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.touch()
        with self._guard:
            if local not in self._followed and _progress(local)[2]:
                return local
            if over is not None:
                self._over[local] = over
            if local in self._followed:
                return local
            self._followed[local] = (job_id, attempt, remote)

        def loop() -> None:
            more = False
            try:
                while True:
                    with self._guard:
                        over_now = self._over.get(local)
                    live = over_now is not None and not quietly(over_now) and not _progress(local)[2]
                    if live and not more:
                        time.sleep(SYNC_EVERY_S)
                    more = self.sync(local, remote, force=more or not live)
                    with self._guard:  # done (not skipped), unless a follow came meanwhile
                        if not live and more is False and self._over.get(local) is over_now:
                            return self._forget(local)
            except BaseException:
                with self._guard:
                    self._forget(local)
                raise

        threading.Thread(target=loop, name=f"overcast-logs-{job_id}", daemon=True).start()
        return local

    def _forget(self, local: Path) -> None:
        self._followed.pop(local, None)
        self._over.pop(local, None)

    def settle(self, attempts: list[tuple[str, int]]) -> None:
        """These attempts have ended: their followed copies get their last parts now, before their end
        is delivered (a follow stops at the end: it must find them there); at most ``SETTLE_WAIT_S`` in
        all, waiting for a sync of the same copy (a follow's tick) within that (a store that hangs must
        not hold up the caller: the follows go on copying)."""
        with self._guard:
            mine = [(p, r) for p, (j, a, r) in self._followed.items() if (j, a) in attempts]
        if not mine:
            return

        deadline = time.monotonic() + SETTLE_WAIT_S
        skipped: list[Path] = []

        def last_parts() -> None:
            for local, remote in mine:
                while more := self.sync(local, remote, force=True, wait=deadline - time.monotonic()):
                    pass
                if more is None:  # another sync held the copy all along: the follow copies the rest
                    skipped.append(local)

        thread = threading.Thread(target=last_parts, name="overcast-logs-settle", daemon=True)
        thread.start()
        thread.join(SETTLE_WAIT_S)
        if thread.is_alive() or skipped:
            self.warn(f"log copy from {redact(self.url)}: the store is slow; the last parts come later")

    def sync(self, local: Path, remote: str, force: bool = False, wait: float | None = None) -> bool | None:
        """Append the parts not copied yet, ``PARTS_PER_SYNC`` at most (``<copy>.parts`` holds how many
        were and the copy's size then, and ``end`` once the node has written it); whether there may be
        more. A sync of the same copy that takes more than ``wait`` (default ``LOCK_WAIT_S``: a store
        that hangs) makes this one skip: None, the copy stays as it is."""
        lock = self._locks[hash(local) % len(self._locks)]
        if not lock.acquire(timeout=max(0.0, LOCK_WAIT_S if wait is None else wait)):
            return None
        try:
            count, size, ended = _progress(local)
            now = time.monotonic()
            if ended or (not force and now - self._synced.get(local, -1e9) < SYNC_EVERY_S):
                return False
            self._synced[local] = now
            try:
                return self._copy(local, remote, *_trimmed(local, count, size))
            except Exception as exc:  # the store is down, or refuses, or the disk is full: as it is
                self.warn(f"log copy from {redact(remote)}: {scrub(repr(exc), remote)}")
                return False
        finally:
            lock.release()

    def _copy(self, local: Path, remote: str, count: int, size: int) -> bool:
        fs, root = open_store(remote)
        for _ in range(PARTS_PER_SYNC):
            try:
                data = fs.cat_file(f"{root}/{part_name(count)}")
            except FileNotFoundError:
                break
            local.parent.mkdir(parents=True, exist_ok=True)
            with local.open("ab") as fh:  # appended in place: a follow holds the file open
                fh.write(data)
            count, size = count + 1, size + len(data)
            _mark(local, count, size)
        else:
            return True
        with contextlib.suppress(FileNotFoundError):
            if int(fs.cat_file(f"{root}/{END}")) == count:
                _mark(local, count, size, ended=True)
        return False


def _marker(local: Path) -> Path:
    return local.with_name(local.name + ".parts")


def _progress(local: Path) -> tuple[int, int, bool]:
    """(parts copied, the copy's size then, whether the node's ``end`` was) from the marker."""
    try:
        words = _marker(local).read_text().split()
        return int(words[0]), int(words[1]), words[2:] == [END]
    except (OSError, ValueError, IndexError):
        return 0, 0, False


def _trimmed(local: Path, count: int, size: int) -> tuple[int, int]:
    """The copy as its marker counts it: bytes past ``size`` (appended, not counted: a crash, a full disk)
    are cut, or they would show twice; a copy shorter than counted (removed?) starts over."""
    try:
        actual = local.stat().st_size
    except FileNotFoundError:
        return 0, 0
    if actual == size:
        return count, size
    keep = (count, size) if actual > size else (0, 0)
    os.truncate(local, keep[1])
    return keep


def _mark(local: Path, count: int, size: int, ended: bool = False) -> None:
    """Written aside and renamed: a full disk or a crash leaves the old count, never an empty one."""
    marker = _marker(local)
    aside = marker.with_name(marker.name + ".tmp")
    aside.write_text(f"{count} {size}{' ' + END if ended else ''}")
    os.replace(aside, marker)


def quietly(over: Callable[[], bool]) -> bool:
    try:
        return over()
    except Exception:  # the store hiccuped: the attempt may well go on
        return False
