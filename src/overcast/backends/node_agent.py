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
from collections.abc import Callable

AGENT_FAILED = 125  # the exit code recorded when the agent itself failed before or around the job


def run_job(
    cmd: list[str], env: dict[str, str], should_stop: Callable[[], str | None], poll: float
) -> tuple[int, bool]:
    """Run the job as a process group under this process (a child subreaper: the node ends when every
    process of the job has ended); when ``should_stop()`` returns a reason, SIGTERM the group once.
    Returns (exit code, whether it was sent SIGTERM)."""
    from overcast.backends.local_runner import become_subreaper

    become_subreaper()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, process_group=0)
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
    while True:  # orphans of the job (a checkpoint still being written) end before the node does
        try:
            os.wait()
        except ChildProcessError:
            break
    return (128 - code if code < 0 else code), signalled
