"""Run work in a forked child process: the second core works while this one goes on.

OR-Tools' min-cost flow holds the GIL (measured: a Python loop beside it in a thread runs no faster
than after it), so a thread cannot overlap it with Python work; a forked child can (copy-on-write: it
sees every array as it was at the fork, nothing is pickled on the way in). The child sends each value
its generator yields as a length-prefixed pickle through a pipe, in order, and exits with
``os._exit`` (no atexit handlers, no flushing of the parent's buffers). Where ``os.fork`` is missing
the generator runs inline.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

_HEADER = struct.Struct("<Q")


class Background:
    """``fn()`` (a generator) started in a child process; ``next(timeout)`` returns its next value, or
    None if the child failed, ended or did not send one within ``timeout`` seconds."""

    def __init__(self, fn: Callable[[], Iterable[Any]]) -> None:
        self._pid: int | None = None
        self._fd: int | None = None
        self._buf = b""
        self._inline: list[Any] = []
        if not hasattr(os, "fork"):
            with contextlib.suppress(Exception):
                self._inline = list(fn())
            return
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 1
            try:
                os.close(read)
                with os.fdopen(write, "wb", buffering=0) as out:
                    for value in fn():
                        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                        out.write(_HEADER.pack(len(data)) + data)
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self._pid, self._fd = pid, read

    def next(self, timeout: float) -> Any:
        if self._fd is None:
            return self._inline.pop(0) if self._inline else None
        end = time.perf_counter() + max(timeout, 0.0)
        while True:
            if len(self._buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buf)
                if len(self._buf) >= _HEADER.size + size:
                    data = self._buf[_HEADER.size : _HEADER.size + size]
                    self._buf = self._buf[_HEADER.size + size :]
                    try:
                        return pickle.loads(data)
                    except Exception:
                        return None
            ready, _, _ = select.select([self._fd], [], [], max(end - time.perf_counter(), 0.0))
            if not ready:
                return None
            chunk = os.read(self._fd, 1 << 20)
            if not chunk:  # the child ended
                return None
            self._buf += chunk

    def cancel(self) -> None:
        """Stop the child (if still running) and reap it; idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None

    def __del__(self) -> None:
        self.cancel()
