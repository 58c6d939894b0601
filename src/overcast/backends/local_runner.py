"""The wrapper around one node of a local job: ``python -m overcast.backends.local_runner NODE_DIR -- CMD``.

It is the leader of the node's process group. It records its pid (so a backend restarted after a crash
finds it) and, when the command ends, the exit status and the time it ended (what the node is billed to,
however late the control loop polls), atomically. A node killed with SIGKILL leaves no exit file: the
backend reads that as a lost node (preemption, provider loss).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22 of /proc/PID/stat): tells a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has ended; only its parent has not reaped it yet
        return None
    return int(fields[19])


def write_exit(prefix: Path, code: int, sigterm: bool) -> None:
    """The node's end: its exit status, whether it got SIGTERM, and when (epoch seconds)."""
    ended = {"code": code, "sigterm": sigterm, "ended_at": time.time()}
    write_json_atomic(prefix.with_suffix(".exit"), ended)


def become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to us, not to PID 1."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: orphans are not waited for
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m overcast.backends.local_runner NODE_PREFIX -- CMD...", file=sys.stderr)
        return 2
    prefix = Path(argv[0])
    got_sigterm = False

    def on_sigterm(signum: int, frame: object) -> None:
        # The whole process group gets the signal; the command decides how to save and exit.
        nonlocal got_sigterm
        got_sigterm = True

    signal.signal(signal.SIGTERM, on_sigterm)
    me = os.getpid()
    write_json_atomic(prefix.with_suffix(".pid"), {"pid": me, "start": process_start_time(me)})
    if (prefix.parent / "stopped").exists():  # stopped while we started, before it could signal us
        write_exit(prefix, 143, sigterm=True)
        return 0
    become_subreaper()
    code = subprocess.Popen(argv[2:], stdin=subprocess.DEVNULL).wait()
    # The node ends when all its processes do: a shell killed by SIGTERM may leave its child saving a
    # checkpoint; as subreaper we inherit and wait for such orphans.
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    write_exit(prefix, code, sigterm=got_sigterm)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
