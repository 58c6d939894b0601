"""Run work in a forked child process: the second core works while this one goes on.

OR-Tools' min-cost flow holds the GIL (measured: a Python loop beside it in a thread runs no faster
than after it), so a thread cannot overlap it with Python work; a forked child can (copy-on-write: it
sees every array as it was at the fork, nothing is pickled on the way in). The child sends each value
its generator yields as a length-prefixed pickle through a pipe, in order, and exits with
``os._exit`` (no atexit handlers, no flushing of the parent's buffers). The parent may be a server with
threads, sockets and database connections, so the child first restores default signal handlers (a
SIGTERM ends it), stops the cyclic garbage collector (no finaliser of a parent's object, such as a
database connection's goodbye, runs in it) and closes the descriptors the parent had open just before
the fork, but its pipe (nothing it could touch reaches a parent's socket, and a listening port is never
held by it). Where ``os.fork`` is missing the generator runs inline; where the fork fails, ``next``
returns None.

An epoll set or eventfd among them is not closed but swapped for a new empty one: a library's at-fork
handler may restart its threads in the child before this code runs, polling the inherited set. gRPC's
event engine does (the Nebius SDK's, any process that made a gRPC call): when its poller's next
``epoll_wait`` failed on the closed descriptor gRPC aborted the child (SIGABRT, so no result), often
within a second. On the empty set the poller waits and never sees the parent's sockets.
"""

from __future__ import annotations

import contextlib
import gc
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
        inherited = _open_descriptors()
        try:
            pid = os.fork()
        except OSError:  # no memory or no process slot for a child: no result, the caller goes on
            os.close(read)
            os.close(write)
            return
        if pid == 0:  # child: never returns
            code = 1
            try:
                _isolate_child(write, inherited)
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
            poller = select.poll()  # not select.select: it fails on descriptors numbered >= 1024
            poller.register(self._fd, select.POLLIN)
            if not poller.poll(max(end - time.perf_counter(), 0.0) * 1000.0):
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


def _open_descriptors() -> list[int] | None:
    """This process's open descriptors (None where /proc does not list them)."""
    try:
        return [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return None


def _isolate_child(keep: int, inherited: list[int] | None) -> None:
    """In the forked child: default signals, no cyclic GC, none of the parent's descriptors ``inherited``
    (None: all of them) but ``keep``; an epoll set or eventfd among them is swapped for a new empty one.
    Descriptors opened since, by at-fork handlers, stay: their library's threads in the child use them."""
    gc.disable()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):  # a solver library printing something must not fail (or reach a parent's pipe)
        if std != keep:
            os.dup2(null, std)
    if null > 2:
        os.close(null)
    if inherited is None:
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1 << 16)
        return
    for fd in inherited:
        if fd <= 2 or fd == keep:
            continue
        try:
            kind = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed since
            continue
        if kind == "anon_inode:[eventpoll]":
            with select.epoll() as empty:
                os.dup2(empty.fileno(), fd)
        elif kind == "anon_inode:[eventfd]":
            empty_fd = os.eventfd(0)
            os.dup2(empty_fd, fd)
            os.close(empty_fd)
        else:
            os.close(fd)
