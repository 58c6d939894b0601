"""The provider-neutral core of a cloud node's agent: run the job, SIGTERM it when asked, report the code.

Each cloud backend has a small agent (``aws_agent`` …) that learns its rank and head from the provider,
then calls ``run_job`` with its own ``should_stop`` (a metadata tag, a preemption notice), and finally
records the exit code where its backend reads it and ends its own instance.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

AGENT_FAILED = 125  # the exit code recorded when the agent itself failed before or around the job
LEFTOVER_GRACE_S = 30.0  # what the job's leftover processes get after its main process ended


def run_job(
    cmd: list[str],
    env: dict[str, str],
    should_stop: Callable[[], str | None],
    poll: float,
    output: Path | None = None,
) -> tuple[int, bool]:
    """Run the job as a process group under this process (a child subreaper: the node ends when every
    process of the job has ended); when ``should_stop()`` returns a reason, SIGTERM the group once.
    Its stdout and stderr go to ``output`` when given (a file, not a pipe: a reader that lags or dies
    never blocks the job, nor do leftover processes that hold it), else to this process's stdout.
    Returns (exit code, whether it was sent SIGTERM)."""
    from overcast.backends.local_runner import become_subreaper

    become_subreaper()
    with contextlib.ExitStack() as files:
        out = files.enter_context(output.open("ab")) if output is not None else None
        err = subprocess.STDOUT if out is not None else None
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, process_group=0
        )
    signalled = False
    while True:
        try:
            code = proc.wait(timeout=poll)
            break
        except subprocess.TimeoutExpired:
            pass
        if signalled:
            continue
        try:
            why = should_stop()
        except OSError as exc:  # the provider's metadata service hiccuped: look again next time
            print(f"overcast-agent: stop check: {exc}", file=sys.stderr, flush=True)
            continue
        if why:
            print(f"overcast-agent: stop requested ({why}): SIGTERM", file=sys.stderr, flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            signalled = True
    _reap_leftovers(proc.pid)
    return (128 - code if code < 0 else code), signalled


def _reap_leftovers(pgid: int) -> None:
    """Processes the job left behind (a checkpoint still being written, a forgotten ``nohup …&``): they
    get SIGTERM and LEFTOVER_GRACE_S seconds, then SIGKILL, so the node always ends and stops billing."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    killed = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # nothing left under this subreaper
        if pid:
            continue
        if time.monotonic() > deadline:
            if killed:
                return  # unkillable (uninterruptible sleep): give up waiting, the node ends anyway
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            _kill_children()
            killed, deadline = True, time.monotonic() + 5.0
        time.sleep(0.1)


def _kill_children() -> None:
    """SIGKILL every process whose parent is this one (orphans re-parented here left the job's group)."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = fh.read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if ppid == me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
