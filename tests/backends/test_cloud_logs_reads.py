"""The server's log copies under contention (backends/cloud_log_copies.py): an attempt's end waits for a
follow's sync of the same copy, a one-off read or an ended attempt's read starts no thread, and the
controller keeps a copy up to date only for a follow."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from overcast.backends import cloud_log_copies
from overcast.backends.cloud_backend import CloudBackend
from overcast.backends.cloud_log_copies import LogCopies
from overcast.backends.cloud_logs import END, log_dir, part_name
from overcast.control.controller import LoopController
from overcast.store import Store
from tests.backends.test_aws import gpu_job

WAIT_S = 20.0  # the bound of every wait here; none is meant to take it


class Gate:
    """A store whose first answer is held (read, then held: a part written meanwhile is not in it),
    and copy locks that say when a second sync waits for one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered, self.release, self.contended = threading.Event(), threading.Event(), threading.Event()
        self.gated, self.asked = True, 0
        real = cloud_log_copies.open_store

        def open_store(url: str) -> tuple[Any, str]:
            fs, root = real(url)
            return SimpleNamespace(cat_file=lambda path: self.answer(fs, path)), root

        monkeypatch.setattr(cloud_log_copies, "open_store", open_store)
        monkeypatch.setattr(LogCopies, "_locks", tuple(Spy(self.contended) for _ in range(64)))

    def answer(self, fs: Any, path: str) -> bytes:
        self.asked += 1
        try:
            got: bytes | Exception = fs.cat_file(path)
        except FileNotFoundError as exc:
            got = exc
        if self.gated:
            self.gated = False
            self.entered.set()
            assert self.release.wait(WAIT_S)
        if isinstance(got, Exception):
            raise got
        return got


class Spy:
    """A lock that says when an acquire found it taken."""

    def __init__(self, contended: threading.Event) -> None:
        self.lock, self.contended = threading.Lock(), contended

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.lock.acquire(False):
            return True
        self.contended.set()
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()


def followed_copy(tmp_path: Path) -> tuple[LogCopies, Path, str, Path, list[str]]:
    """A running attempt's followed copy holding its first part (the follow's thread left out: the
    test plays its syncs), and the store's folder."""
    url = f"file://{tmp_path / 'bucket'}"
    warned: list[str] = []
    copies = LogCopies(url, tmp_path / "home", warned.append)
    remote, local = log_dir(url, "j", 1, 0), copies.local("j", 1, 0)
    folder = tmp_path / "bucket" / "j" / "1" / "node-0"
    folder.mkdir(parents=True)
    (folder / part_name(0)).write_bytes(b"first\n")
    assert copies.sync(local, remote, force=True) is False and local.read_bytes() == b"first\n"
    copies._followed[local] = ("j", 1, remote)
    return copies, local, remote, folder, warned


def test_an_attempt_s_end_waits_for_a_follow_s_sync_of_the_same_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_log_copies, "LOCK_WAIT_S", 0.0)  # a read's wait: settle's is its own
    monkeypatch.setattr(cloud_log_copies, "SETTLE_WAIT_S", WAIT_S)
    copies, local, remote, folder, warned = followed_copy(tmp_path)
    gate = Gate(monkeypatch)
    tick = threading.Thread(target=copies.sync, args=(local, remote, True), daemon=True)
    tick.start()  # the follow's tick: it asked for part 1 before the node wrote it, and holds the copy
    assert gate.entered.wait(WAIT_S)
    (folder / part_name(1)).write_bytes(b"LAST WORDS\n")
    (folder / END).write_text("2")  # the node's end: then the attempt ends
    settle = threading.Thread(target=copies.settle, args=([("j", 1)],), daemon=True)
    settle.start()
    assert gate.contended.wait(WAIT_S)
    gate.release.set()
    settle.join(WAIT_S)
    assert not settle.is_alive() and local.read_bytes() == b"first\nLAST WORDS\n" and warned == []
    tick.join(WAIT_S)


def test_an_attempt_s_end_that_could_not_copy_the_last_parts_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_log_copies, "LOCK_WAIT_S", 0.0)
    monkeypatch.setattr(cloud_log_copies, "SETTLE_WAIT_S", 0.01)
    copies, local, remote, _, warned = followed_copy(tmp_path)
    gate = Gate(monkeypatch)
    tick = threading.Thread(target=copies.sync, args=(local, remote, True), daemon=True)
    tick.start()
    assert gate.entered.wait(WAIT_S)
    copies.settle([("j", 1)])  # the tick holds the copy longer than settle may wait
    gate.release.set()
    tick.join(WAIT_S)
    assert warned == [f"log copy from {copies.url}: the store is slow; the last parts come later"]


def test_a_read_of_an_ended_attempt_is_one_throttled_sync_and_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_log_copies, "SYNC_EVERY_S", 1e6)
    copies, local, _, _, _ = followed_copy(tmp_path)
    copies._followed.clear()  # preempted: no ``end`` from the node, and nobody follows it now
    copies._synced.clear()
    gate = Gate(monkeypatch)
    gate.gated = False
    started: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    for _ in range(10):
        assert copies.path("j", 1, 0, over=lambda: True) == local
    for rank in range(1, 21):  # one-off reads (no ``over``) of a running attempt's other ranks
        (tmp_path / "bucket" / "j" / "1" / f"node-{rank}").mkdir()
        (tmp_path / "bucket" / "j" / "1" / f"node-{rank}" / part_name(0)).write_bytes(b"x\n")
        assert copies.path("j", 1, rank) == copies.local("j", 1, rank)
    assert started == [] and not copies._followed
    assert gate.asked == 2 + 20 * 3  # part 1 and END once, then throttled; each rank: 0, 1 and END


class Cloud(CloudBackend):
    """A cloud backend that records whether a read asked it to keep the copy up to date."""

    def __init__(self, name: str, asked: list[bool]) -> None:
        self.name, self.asked = name, asked

    def log_path(self, job_id: str, attempt: int, node_rank: int, over: Any = None) -> Path | None:
        self.asked.append(over is not None)
        return None


def test_the_controller_keeps_a_copy_up_to_date_only_for_a_follow(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_team("ml")
    job = store.submit("ml", gpu_job("j", "true", nodes=1)).id
    asked: list[bool] = []
    rt = SimpleNamespace(backends={"aws:a": Cloud("aws:a", asked)}, home=tmp_path)
    controller = LoopController(SimpleNamespace(rt=rt, store=store))  # type: ignore[arg-type]
    assert controller.log_path(job, 1, 0) is None and controller.log_path(job, 1, 0, follow=True) is None
    assert asked == [False, True]
