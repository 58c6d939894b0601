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
held by it): see "Which descriptors are the parent's" below. Where ``os.fork`` is missing the generator
runs inline; where the fork fails, ``next`` returns None.

An epoll set or eventfd among them is not closed but swapped for a new empty one: a library's at-fork
handler may restart its threads in the child before this code runs, polling the inherited set. gRPC's
event engine does (the Nebius SDK's, any process that made a gRPC call): when its poller's next
``epoll_wait`` failed on the closed descriptor gRPC aborted the child (SIGABRT, so no result), often
within a second. On the empty set the poller waits and never sees the parent's sockets.

Which descriptors are the parent's: the parent records each descriptor's link target
(``/proc/self/fd/N``: ``socket:[inode]``, ``pipe:[inode]``, a path, ``anon_inode:[eventfd]``) just before
``os.fork``; the child lists its own descriptors and closes (or swaps) those whose number and target
match that record, every socket whatever its number, and any pipe missing from it. Listing in the parent
alone was not sound:
at-fork handlers run between the listing and the fork. A number freed there is reused in the child by a
handler's new descriptor (real gRPC: fd 7 a socket at the listing, an eventfd in the child), which the
child must keep, hence the target check; one opened there (a listening socket) is inherited unlisted,
and another thread may close a listed number and open a socket on it before the fork: sockets (a port, a
parent's peer) are closed on any number (the handlers we know keep epoll sets and eventfds, not sockets),
unlisted pipes too. Listing
in the child alone cannot tell a handler's descriptor from an inherited one. What is left: an unlisted
file stays open (it holds no port), and a handler's epoll set or eventfd that reuses the number of a
parent's one is swapped too, as every one was when the child listed alone (the reviewer's measurement:
40 of 40 gRPC children returned results).
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
        inherited = _descriptor_targets()
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


def _descriptor_targets() -> dict[int, str] | None:
    """This process's open descriptors and their link targets (None where /proc does not list them)."""
    try:
        listed = os.listdir("/proc/self/fd")
    except OSError:
        return None
    targets = {}
    for name in listed:
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            targets[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return targets


def _isolate_child(keep: int, inherited: dict[int, str] | None) -> None:
    """In the forked child: default signals, no cyclic GC, none of the parent's descriptors but ``keep``
    (``inherited``: the parent's targets just before the fork; None: close all); an epoll set or eventfd
    among them is swapped for a new empty one. A descriptor an at-fork handler opened (a number not
    listed, or listed with another target) stays, unless a socket or pipe: its library's threads use it."""
    gc.disable()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):  # a solver library printing something must not fail (or reach a parent's pipe)
        if std != keep:
            os.dup2(null, std)
    if null > 2:
        os.close(null)
    now = _descriptor_targets() if inherited is not None else None
    if inherited is None or now is None:
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1 << 16)
        return
    for fd, kind in now.items():
        if fd <= 2 or fd == keep or not _parents(kind, inherited.get(fd)):
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


def _parents(kind: str, listed: str | None) -> bool:
    """Whether a child's descriptor with target ``kind`` is the parent's, listed with ``listed``."""
    if kind.startswith("socket:"):  # a port or a parent's peer, on a new number or a reused one
        return True
    if listed is None:  # opened after the listing: by a before-fork handler if it could hold a pipe's end
        return kind.startswith("pipe:")
    return kind == listed
