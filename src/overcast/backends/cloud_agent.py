"""What the node agents of the clouds (aws_agent, azure_agent, oci_agent, gcp_agent) share: the command
line (as the boot script writes it and as the agent reads it), the log lines, and the end of a node (its
exit tags, then powering its machine off, whatever happened).

Each provider's agent finds its rank and head through its own metadata service and API, and says how to
tag and end its machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from overcast.backends.base import LaunchRequest
from overcast.backends.cloud_gangs import ENDED_AT
from overcast.backends.node_agent import AGENT_FAILED, run_job

ShouldStop = Callable[[], str | None]


def say(message: str) -> None:
    print(f"overcast-agent: {message}", file=sys.stderr, flush=True)


def agent_command(
    python: str, module: str, request: LaunchRequest, poll: float, first: list[str], last: list[str]
) -> list[str]:
    """The boot script's command line for the agent ``module``: the provider's ``first`` options, the
    gang's, then the provider's ``last`` ones (what ``parse_args`` reads)."""
    gang = ["--job", request.job_id, "--attempt", str(request.attempt), "--nodes", str(request.num_nodes)]
    return [python, "-m", module, *first, *gang, "--poll", str(poll), *last]


def parse_args(
    module: str, argv: list[str], poll: float, options: list[tuple[str, bool]]
) -> tuple[argparse.Namespace, list[str]] | None:
    """``--job --attempt --nodes --poll`` plus the provider's ``options`` ((flag, required)), then ``--``
    and the job's command; None (after the usage line) when there is no ``--``."""
    if "--" not in argv:
        print(f"usage: python -m {module} [options] -- CMD...", file=sys.stderr)
        return None
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog=module)
    for flag, required in options:
        parser.add_argument(flag, required=required)
    parser.add_argument("--job", required=True)
    parser.add_argument("--attempt", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--poll", type=float, default=poll)
    return parser.parse_args(argv[:split]), argv[split + 1 :]


def run_rank(
    cmd: list[str], node: str, rank: int | str, nodes: int, head: str, should_stop: ShouldStop, poll: float
) -> tuple[int, bool]:
    """Run the job as ``rank`` of ``nodes`` with the head at ``head``: (exit code, got SIGTERM)."""
    env = os.environ | {"OVERCAST_NODE_RANK": str(rank), "OVERCAST_HEAD_ADDR": head}
    say(f"{node} is rank {rank} of {nodes}, head {head}")
    return run_job(cmd, env, should_stop, poll)


def serve(
    node: str,
    prefix: str,
    start: Callable[[], tuple[int, bool]],
    tag: Callable[[dict[str, str]], None],
    power_off: Callable[[], object],
    how: str = "terminating",
) -> int:
    """Run ``start`` (the node's life: (exit code, got SIGTERM)), then tag the machine ``<prefix>exit``
    (and ``<prefix>sigterm``) and ``<prefix>ended-at`` and power it off: whatever happened, the machine
    must not stay up (and bill) with nothing running. An agent that failed itself exits ``AGENT_FAILED``.

    ``ended-at`` is when the job ended, whole epoch seconds (digits: a valid value on every provider, GCP
    labels included): the backend bills the node to it, not to when it polls."""
    code, sigterm = AGENT_FAILED, False
    try:
        code, sigterm = start()
    finally:
        ended = str(int(time.time()))
        exit_tags = {prefix + "exit": str(code), prefix + ENDED_AT: ended}
        exit_tags |= {prefix + "sigterm": "1"} if sigterm else {}
        say(f"exit {code}; tagging and {how} {node}")
        try:
            tag(exit_tags)
        finally:
            power_off()
    return 0
