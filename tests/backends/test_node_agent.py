"""The cloud node agent's core: a job that leaves background processes behind still ends the node."""

from __future__ import annotations

import subprocess
import sys
import time

# run in a child: run_job makes its process a subreaper, which a test runner must not become
AGENT = """
from overcast.backends import node_agent
node_agent.LEFTOVER_GRACE_S = 1.0
job = "sleep 600 & bash -c 'trap \\"\\" TERM; sleep 600' & sleep 0.5; exit 3"
code, signalled = node_agent.run_job(["bash", "-c", job], {"PATH": "/usr/bin:/bin"}, lambda: None, 0.1)
print(f"code={code} signalled={signalled}")
"""


def test_leftover_processes_are_ended_even_if_they_ignore_sigterm_and_the_exit_code_is_kept() -> None:
    start = time.monotonic()
    cmd = [sys.executable, "-c", AGENT]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    assert "code=3 signalled=False" in done.stdout, done.stdout + done.stderr
    assert 1.4 < time.monotonic() - start < 30  # SIGKILL after the 1 s grace, not the leftovers' 600 s
