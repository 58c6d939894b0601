"""Which descriptors the forked child (background.py) closes: those at-fork handlers open or free
between the parent's listing and the fork. In a fresh interpreter: at-fork handlers cannot be removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not os.path.isdir("/proc/self/fd"), reason="needs os.fork and /proc"
)

PARENT = """
import os, socket
from overcast.placement.batch.background import Background

state = {}


def before():  # a before-fork handler opens a listening socket, or frees a listed number
    if state.get("mode") == "open":  # a file first: the socket must not take the listing's own number
        state["file"] = open(os.devnull)
        state["sock"] = socket.create_server(("127.0.0.1", 0))
    elif state.get("mode") == "free":
        os.close(state["victim"])
    elif state.get("mode") == "reuse":  # another thread: a listed socket closed, a new one on its number
        state["client"].close()
        state["sock"] = socket.create_server(("127.0.0.1", 0))


def after_in_child():  # a library's handler makes its own wakeup pipe: the freed number again
    if state.get("mode") == "free":
        state["pipe"] = os.pipe()[0]


os.register_at_fork(before=before, after_in_child=after_in_child)


def targets():
    seen = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor
            pass
    yield seen


state["mode"] = "open"
child = Background(targets)
state["mode"] = None
sock = os.readlink(f"/proc/self/fd/{state['sock'].fileno()}")
seen = child.next(30.0)
child.cancel()
assert seen is not None and sock not in seen, (sock, seen)


def handlers_pipe():
    os.fstat(state["pipe"])  # raises (no result) if the child closed it
    yield state["pipe"]


state["victim"] = os.open(os.devnull, os.O_RDONLY)
state["mode"] = "free"
child = Background(handlers_pipe)
state["mode"] = None
got = child.next(30.0)
child.cancel()
assert got == state["victim"], (got, state["victim"])

state["client"] = socket.socket()
number = state["client"].fileno()
state["mode"] = "reuse"
child = Background(targets)
state["mode"] = None
assert state["sock"].fileno() == number  # the new socket took the listed number
sock = os.readlink(f"/proc/self/fd/{number}")
seen = child.next(30.0)
child.cancel()
assert seen is not None and sock not in seen, (sock, seen)
print("ok", flush=True)
"""


def test_child_closes_a_socket_opened_at_fork_and_keeps_a_handlers_descriptor_on_a_freed_number() -> None:
    # The old code listed in the parent only: the listening socket stayed open in the child (its port held
    # while the child ran) and the handler's pipe, on a number listed as /dev/null, was closed.
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", PARENT], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
