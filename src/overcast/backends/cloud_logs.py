"""A cloud node's job log through a store the nodes and the server share (the account's ``logs_url``, an
fsspec URL: ``s3://``, ``gs://``, ``az://``, ``file://`` on a shared filesystem).

The agent (``PartShipper``) uploads the new bytes of the job's output file as numbered parts under
``<logs_url>/<job>/<attempt>/node-<rank>/``: object stores cannot append, and re-uploading the whole file
each time would be quadratic. After the last part it writes ``end`` (the number of parts). The server
(``LogCopies``, cloud_log_copies.py) appends the parts it has not copied yet to
``<home>/logs/<job>/<attempt>/node-<rank>.log``, the file the API streams; it asks for part ``n`` by name
(one GET, no listing: listings are cached by some fsspec stores and grow with the job) and keeps ``n``, and
the copy's size then, next to the copy.
Nothing the store does (hang, fail) may hold up the job, the console, or the server's control loop.
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
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

UPLOAD_EVERY_S = 15.0  # how often a node uploads its new output (a PUT per node per interval, at most)
STOPPING_EVERY_S = 1.0  # how often once a stop is asked: the node may be ended before the job's last words
ECHO_EVERY_S = 0.5  # how often the new output goes to the console (its own thread: the store may hang)
FINISH_WAIT_S = 120.0  # how long the end of a job waits for its last upload, in all (the node bills)
RETRY_PAUSE_S = 1.0  # between the end's tries
FIRST_TRIES = 3  # the end's tries when the store has never taken a part (misconfigured: do not wait)
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
        user, query = parts.netloc.rpartition("@")[0], parts.query.split("&")
        raw = [user, parts.query, *user.split(":"), *query, *(v.partition("=")[2] for v in query)]
        # as written, and decoded (a library's message may show ``p@ss`` for ``p%40ss``): longest first
        found = {v for r in raw for v in (r, unquote(r), unquote_plus(r)) if len(v) > 1}
        for secret in sorted(found, key=len, reverse=True):
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


def open_store(url: str) -> tuple[Any, str]:
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
        self.reached = False  # whether the store has taken anything (then the end's upload is retried)
        self._fs: tuple[Any, str] | None = None

    def ship(self) -> bool:
        """Upload what is new; whether everything read so far is in the store."""
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

    def finish(self, deadline: float | None = None) -> bool:
        """The last upload, then ``end`` (the number of parts), tried until done or ``deadline`` (monotonic;
        default FINISH_WAIT_S from now): a failed PUT here would lose the job's last words. A store that
        has never taken anything (a wrong URL, no access) gets ``FIRST_TRIES`` only: the node bills."""
        deadline = time.monotonic() + FINISH_WAIT_S if deadline is None else deadline
        tries = 0
        while True:
            tries += 1
            if self.ship():
                try:
                    self._put(END, str(self.parts).encode())
                    return True
                except Exception as exc:
                    self._said(exc)
            hopeless = not self.reached and tries >= FIRST_TRIES
            if hopeless or time.monotonic() + RETRY_PAUSE_S > deadline:
                return False
            time.sleep(RETRY_PAUSE_S)

    def _put(self, name: str, data: bytes) -> None:
        fs, root = self._fs = self._fs or open_store(self.url)
        _put(fs, f"{root}/{name}", data)
        self.reached = True

    def _said(self, exc: Exception) -> None:
        said = scrub(repr(exc), self.url)
        print(f"overcast-agent: log upload to {redact(self.url)}: {said}", file=sys.stderr, flush=True)

    def _read(self) -> bytes:
        with self.source.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read(PART_MAX)
        self.offset += len(data)
        return data

    def echo_new(self) -> None:
        """The output not echoed yet to ``echo`` (one thread at a time)."""
        if self.echo is None:
            return
        with contextlib.suppress(OSError, ValueError), self.source.open("rb") as fh:
            fh.seek(self.echoed)
            while data := fh.read(PART_MAX):
                self.echo.write(data)
                self.echo.flush()
                self.echoed += len(data)


@contextlib.contextmanager
def shipping(shipper: PartShipper, every: float) -> Iterator[Callable[[], None]]:
    """Ship every ``every`` seconds while the body runs (the job), and once more at its end, however it
    ended; echo the output every ``ECHO_EVERY_S`` apart from that (a hanging store must not stop the
    console). Yields ``hurry``, for when a stop is asked: ship at once, then every ``STOPPING_EVERY_S``
    (the job's last words may come after the grace, when the node is ended)."""
    wake, over, hurried = threading.Event(), threading.Event(), threading.Event()

    def uploads() -> None:
        while True:
            wake.wait(STOPPING_EVERY_S if hurried.is_set() else every)
            wake.clear()
            if over.is_set():  # after clear(): an end that set ``wake`` just before is not missed
                return
            shipper.ship()

    def echoes() -> None:
        while not over.wait(ECHO_EVERY_S):
            shipper.echo_new()

    def hurry() -> None:
        if not hurried.is_set():
            hurried.set()
            wake.set()

    threads = [
        threading.Thread(target=f, name=f"overcast-{f.__name__}", daemon=True) for f in (uploads, echoes)
    ]
    [thread.start() for thread in threads]
    try:
        yield hurry
    finally:
        deadline = time.monotonic() + FINISH_WAIT_S  # one deadline for the whole end (the node bills)
        over.set()
        wake.set()
        uploader, echoer = threads
        echoer.join(ECHO_EVERY_S + 5.0)
        if not echoer.is_alive():  # the console shows the last lines, whatever the store does
            shipper.echo_new()
        uploader.join(max(0.0, deadline - time.monotonic()))
        last = threading.Thread(
            target=shipper.finish, args=(deadline,), name="overcast-logs-end", daemon=True
        )
        if not uploader.is_alive():
            last.start()
            last.join(max(0.0, deadline - time.monotonic()))
        if uploader.is_alive() or last.is_alive():
            print("overcast-agent: log upload hangs: the last output stays on the node", file=sys.stderr)
