"""The README's main demo, end to end, as a user runs it: `overcast demo` in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_moves_the_job_and_gets_the_same_result(tmp_path) -> None:
    env = os.environ | {"OVERCAST_HOME": str(tmp_path), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "overcast.cli.main", "demo"],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "provider-down" in out and "resumed from checkpoint at step" in out
    assert "succeeded on local/azure-local -> local/oci-local: SAME result" in out
    results = [line.split("│")[2].strip() for line in out.splitlines() if "RESULT" in line and "│" in line]
    assert len(results) == 3 and len(set(results)) == 1  # reference, node 0, node 1
    bill = {cells[1].strip(): cells for line in out.splitlines() if (cells := line.split("│"))[1:2]}
    for pool in ("local/azure-local", "local/oci-local"):  # both attempts billed, each at its own price
        assert pool in bill and float(bill[pool][3]) > 0 and float(bill[pool][4]) > 0, out
