"""A cloud node's job log through a store the nodes and the server share (the account's ``logs_url``, an
fsspec URL: ``s3://``, ``gs://``, ``az://``, ``file://`` on a shared filesystem).

The agent (``PartShipper``) uploads the new bytes of the job's output file as numbered parts under
``<logs_url>/<job>/<attempt>/node-<rank>/``: object stores cannot append, and re-uploading the whole file
each time would be quadratic. After the last part it writes ``end`` (the number of parts). The server
(``LogCopies``) appends the parts it has not copied yet to ``<home>/logs/<job>/<attempt>/node-<rank>.log``,
the file the API streams; it asks for part ``n`` by name (one GET, no listing: listings are cached by
some fsspec stores and grow with the job) and keeps ``n`` next to the copy.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

UPLOAD_EVERY_S = 15.0  # how often a node uploads its new output (a PUT per node per interval, at most)
SYNC_EVERY_S = 2.0  # how often the server asks the store for new parts of one log, at most
FINISH_WAIT_S = 120.0  # how long the end of a job waits for its last upload
PART_MAX = 16 * 1024 * 1024  # the largest part: what an agent holds in memory at once
END = "end"

_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # no "/", no "." or ".." as a whole


def redact(url: str) -> str:
    """``url`` without its user/password and query (a SAS token, a key): what messages may show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<logs_url>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str, url: str) -> str:
    """``text`` (an error's message, say) without the secrets ``redact`` leaves out of ``url``."""
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        for secret in (parts.netloc.rpartition("@")[0], parts.query):
            if secret:
                text = text.replace(secret, "***")
    return text


def log_dir(url: str, job_id: str, attempt: int | str, rank: int | str) -> str:
    """``<url>/<job>/<attempt>/node-<rank>``; ValueError for an id that could leave its folder."""
    for part in (job_id, str(attempt), str(rank)):
        if not _SAFE_ID.fullmatch(part):
            raise ValueError(f"unsafe name {part!r} for a log path")
    return f"{url.rstrip('/')}/{job_id}/{attempt}/node-{rank}"


def part_name(n: int) -> str:
    return f"part-{n:08d}"  # fixed width: the store's listing order is the parts' order


def _store(url: str) -> tuple[Any, str]:
    """fsspec's filesystem and path for ``url`` (imported late: the agent needs it only with a URL)."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def _put(fs: Any, path: str, data: bytes) -> None:
    """Write one object whole. An object store's PUT is atomic; on a shared filesystem a reader could see a
    half-written file, so it is written aside and renamed."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        fs.pipe_file(path + ".tmp", data)
        fs.mv(path + ".tmp", path)
    else:
        fs.pipe_file(path, data)


class PartShipper:
    """The agent's side: the new bytes of ``source`` to the store as parts, and to ``echo`` (the agent's
    stdout: the node's console keeps showing the job's output). A failed upload is said on stderr and
    tried again, the same bytes as the same part, next time: a reader never sees a part change."""

    def __init__(self, url: str, source: Path, echo: IO[bytes] | None = None) -> None:
        self.url, self.source, self.echo = url, source, echo
        self.parts = 0  # parts uploaded
        self.offset = 0  # bytes of ``source`` read for parts
        self.echoed = 0  # bytes of ``source`` echoed (the console goes on while the store fails)
        self.pending: bytes | None = None  # read, not uploaded yet
        self._fs: tuple[Any, str] | None = None

    def ship(self) -> bool:
        """Upload what is new; whether everything read so far is in the store."""
        self._echo()
        try:
            while True:
                if self.pending is None:
                    self.pending = self._read()
                    if not self.pending:
                        self.pending = None
                        return True
                self._put(part_name(self.parts), self.pending)
                self.parts, self.pending = self.parts + 1, None
        except Exception as exc:  # any store's error: the job goes on, the next round tries again
            self._said(exc)
            return False

    def finish(self) -> None:
        """The last upload, then ``end`` (the number of parts): the server stops asking for more."""
        if self.ship():
            try:
                self._put(END, str(self.parts).encode())
            except Exception as exc:
                self._said(exc)

    def _put(self, name: str, data: bytes) -> None:
        fs, root = self._fs = self._fs or _store(self.url)
        _put(fs, f"{root}/{name}", data)

    def _said(self, exc: Exception) -> None:
        said = scrub(repr(exc), self.url)
        print(f"overcast-agent: log upload to {redact(self.url)}: {said}", file=sys.stderr, flush=True)

    def _read(self) -> bytes:
        with self.source.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read(PART_MAX)
        self.offset += len(data)
        return data

    def _echo(self) -> None:
        if self.echo is None:
            return
        with contextlib.suppress(OSError, ValueError), self.source.open("rb") as fh:
            fh.seek(self.echoed)
            while data := fh.read(PART_MAX):
                self.echo.write(data)
                self.echo.flush()
                self.echoed += len(data)


@contextlib.contextmanager
def shipping(shipper: PartShipper, every: float) -> Iterator[None]:
    """Ship every ``every`` seconds while the body runs (the job), and once more at its end, however it
    ended."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            shipper.ship()

    thread = threading.Thread(target=loop, name="overcast-logs", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(FINISH_WAIT_S)  # a store that hangs must not keep the node up (and billing)
        last = threading.Thread(target=shipper.finish, name="overcast-logs-end", daemon=True)
        if not thread.is_alive():
            last.start()
            last.join(FINISH_WAIT_S)
        if thread.is_alive() or last.is_alive():
            print("overcast-agent: log upload hangs: the last output stays on the node", file=sys.stderr)


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

    def local(self, job_id: str, attempt: int, rank: int) -> Path:
        return self.home / "logs" / job_id / str(attempt) / f"node-{rank}.log"

    def path(self, job_id: str, attempt: int, rank: int) -> Path | None:
        """The local copy, brought up to date; None when the node has uploaded nothing (yet)."""
        try:
            remote = log_dir(self.url, job_id, attempt, rank)
        except ValueError:
            return None
        local = self.local(job_id, attempt, rank)
        self.sync(local, remote)
        return local if local.exists() else None

    def follow(self, job_id: str, attempt: int, rank: int, over: Callable[[], bool]) -> None:
        """Keep the copy up to date while the attempt runs (until ``over()`` or the node's ``end``); one
        thread per copy."""
        local, remote = self.local(job_id, attempt, rank), log_dir(self.url, job_id, attempt, rank)
        with self._guard:
            if local in self._followed or _ended(local):
                return
            self._followed[local] = (job_id, attempt, remote)

        def loop() -> None:
            try:
                while not _ended(local) and not _quietly(over):
                    time.sleep(SYNC_EVERY_S)
                    self.sync(local, remote)
                self.sync(local, remote, force=True)
            finally:
                with self._guard:
                    self._followed.pop(local, None)

        threading.Thread(target=loop, name=f"overcast-logs-{job_id}", daemon=True).start()

    def settle(self, job_id: str, attempt: int) -> None:
        """The attempt has ended: its followed copies get their last parts now, before its end is
        delivered (a follow stops at the end: it must find them there)."""
        with self._guard:
            mine = [(p, r) for p, (j, a, r) in self._followed.items() if (j, a) == (job_id, attempt)]
        for local, remote in mine:
            self.sync(local, remote, force=True)

    def sync(self, local: Path, remote: str, force: bool = False) -> None:
        """Append the parts not copied yet (``<copy>.parts`` holds how many were, then ``end`` once the
        node has written it)."""
        with self._locks[hash(local) % len(self._locks)]:
            now = time.monotonic()
            if _ended(local) or (not force and now - self._synced.get(local, -1e9) < SYNC_EVERY_S):
                return
            self._synced[local] = now
            count = _copied(local)
            try:
                fs, root = _store(remote)
                while True:
                    try:
                        data = fs.cat_file(f"{root}/{part_name(count)}")
                    except FileNotFoundError:
                        break
                    local.parent.mkdir(parents=True, exist_ok=True)
                    with local.open("ab") as fh:  # appended in place: a follow holds the file open
                        fh.write(data)
                    count += 1
                    _mark(local, str(count))
                with contextlib.suppress(FileNotFoundError):
                    if int(fs.cat_file(f"{root}/{END}")) == count:
                        _mark(local, f"{count} {END}")
            except Exception as exc:  # the store is down, or refuses: the copy stays as it is
                self.warn(f"log copy from {redact(remote)}: {scrub(repr(exc), remote)}")


def _marker(local: Path) -> Path:
    return local.with_name(local.name + ".parts")


def _copied(local: Path) -> int:
    try:
        return int(_marker(local).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _ended(local: Path) -> bool:
    try:
        return _marker(local).read_text().split()[1:] == [END]
    except OSError:
        return False


def _mark(local: Path, text: str) -> None:
    _marker(local).write_text(text)


def _quietly(over: Callable[[], bool]) -> bool:
    try:
        return over()
    except Exception:  # the store hiccuped: the attempt may well go on
        return False
