"""What the node agents of the clouds (aws_agent, azure_agent, oci_agent, gcp_agent, lambda_agent,
nebius_agent) share: the command line (as the boot script writes it and as the agent reads it), the log
lines, the gang wait (``GangLook``, ``wait_for_gang``: aws, azure, gcp and nebius; lambda and oci wait
their own way, with ``head_ended``), the upload of the job's output to the account's ``logs_url``
(``ship_logs``) and the end of a node (its exit tags, then powering its machine off, whatever happened).

Each provider's agent finds its rank and head through its own metadata service and API, and says how to
tag and end its machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from overcast.backends.base import LaunchRequest
from overcast.backends.cloud_gangs import ENDED_AT
from overcast.backends.cloud_logs import UPLOAD_EVERY_S, PartShipper, log_dir, redact, shipping
from overcast.backends.node_agent import AGENT_FAILED, run_job

ShouldStop = Callable[[], str | None]

STOPPED_BEFORE_START = 143  # recorded as if the job had got SIGTERM: it was stopped, nothing failed
HEAD_FAILED = 122  # rank 0 had already failed when this rank looked for it: the job never ran here


@dataclass(frozen=True, slots=True)
class HeadEnded:
    """Rank 0 had already ended (its agent tagged its exit) when this rank looked for it: a short job
    (or a crash at start-up) ends, and its node goes, within a second, before a slower rank looks."""

    code: int
    sigterm: bool
    addr: str  # its address, when the provider still shows it; else ""

    def instead(self) -> tuple[int, bool] | None:
        """What this rank records instead of running the job, at once; None: run it all the same.

        Rank 0 succeeded: this rank runs its part, as it would have had it started a second earlier (a
        job whose other ranks do nothing succeeds; one whose ranks each do a share still does it; one
        that needs the head fails by itself). Rank 0 got SIGTERM (a stop, a spot notice): the gang was
        stopped, as a stop before the start. Rank 0 failed: the gang has failed (its outcome is rank 0's
        code), so ``HEAD_FAILED`` rather than waiting for a head that will never come."""
        if self.sigterm:
            return STOPPED_BEFORE_START, True
        return None if self.code == 0 else (HEAD_FAILED, False)


def head_ended(tags: Mapping[str, str], prefix: str, addr: str) -> HeadEnded | None:
    """Rank 0's end, from its machine's tags (labels), when its agent has tagged ``<prefix>exit``."""
    if prefix + "exit" not in tags:
        return None
    try:
        code = int(tags[prefix + "exit"])
    except ValueError:  # not an agent's tag: rank 0 did not succeed, that much is sure
        code = AGENT_FAILED
    return HeadEnded(code, tags.get(prefix + "sigterm") == "1", addr)


@dataclass(slots=True)
class GangLook:
    """One look at a gang while a rank waits for it: the ranks there (rank -> address), how rank 0 ended
    if it has, and whether this rank was stopped."""

    ranks: dict[str, str] = field(default_factory=dict)
    head: HeadEnded | None = None
    stopped: bool = False

    def add(self, rank: int | str, addr: str, tags: Mapping[str, str], prefix: str, live: bool) -> None:
        """A machine of the gang. It counts when ``live`` (the provider's test: running, and its agent up
        where ranks wait for each other's) or when its rank has already ended (its exit tag), whatever
        became of the machine since: a quick job ends, and its machine terminates, within seconds, and a
        slower rank must not wait out the gang wait for it."""
        if str(rank) == "0":
            self.head = self.head or head_ended(tags, prefix, addr)
        if live or prefix + "exit" in tags:
            self.ranks[str(rank)] = addr


def wait_for_gang(
    look: Callable[[], GangLook], nodes: int, seconds: float, pause: float, gang: str
) -> str | HeadEnded | None:
    """Rank 0's address once all ``nodes`` ranks are there; how rank 0 ended, at once, when it already
    has; None when this rank was stopped first. ``look`` lists the gang again every ``pause`` seconds, for
    at most ``seconds`` (then RuntimeError: the node ends as the agent's failure)."""
    deadline = time.monotonic() + seconds
    while True:
        seen = look()
        if seen.stopped:
            return None
        if seen.head is not None:
            return seen.head
        if len(seen.ranks) >= nodes and "0" in seen.ranks:
            return seen.ranks["0"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"gang {gang}: {len(seen.ranks)} of {nodes} ranks after waiting")
        time.sleep(pause)


def say(message: str) -> None:
    print(f"overcast-agent: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class LogShipping:
    """Where the agent uploads the job's output (``cloud_logs``), and how often."""

    url: str
    every: float
    job: str
    attempt: str


def agent_command(
    python: str,
    module: str,
    request: LaunchRequest,
    poll: float,
    first: list[str],
    last: list[str],
    logs_url: str | None = None,
) -> list[str]:
    """The boot script's command line for the agent ``module``: the provider's ``first`` options, the
    gang's, then the provider's ``last`` ones (what ``parse_args`` reads)."""
    gang = ["--job", request.job_id, "--attempt", str(request.attempt), "--nodes", str(request.num_nodes)]
    logs = ["--logs-url", logs_url, "--logs-every", str(UPLOAD_EVERY_S)] if logs_url else []
    return [python, "-m", module, *first, *gang, "--poll", str(poll), *logs, *last]


def parse_args(
    module: str, argv: list[str], poll: float, options: list[tuple[str, bool]]
) -> tuple[argparse.Namespace, list[str]] | None:
    """``--job --attempt --nodes --poll [--logs-url --logs-every]`` plus the provider's ``options``
    ((flag, required)), then ``--`` and the job's command; None (after the usage line) when there is no
    ``--``. ``args.logs`` is the ``LogShipping`` (None without ``--logs-url``)."""
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
    parser.add_argument("--logs-url")
    parser.add_argument("--logs-every", type=float, default=UPLOAD_EVERY_S)
    args = parser.parse_args(argv[:split])
    url, every = args.logs_url, args.logs_every
    args.logs = LogShipping(url, every, args.job, args.attempt) if url else None
    return args, argv[split + 1 :]


def run_rank(
    cmd: list[str],
    node: str,
    rank: int | str,
    nodes: int,
    head: str | HeadEnded,
    should_stop: ShouldStop,
    poll: float,
    logs: LogShipping | None = None,
) -> tuple[int, bool]:
    """Run the job as ``rank`` of ``nodes`` with the head at ``head``: (exit code, got SIGTERM). A head
    that had already ended decides whether the job runs at all (``HeadEnded.instead``). With ``logs``,
    its output is uploaded while it runs and once at its end (``ship_logs``)."""
    if isinstance(head, HeadEnded):
        instead = head.instead()
        said = f"rank 0 had already ended (exit {head.code}{', SIGTERM' if head.sigterm else ''})"
        if instead is not None:
            say(f"{said}: {node} does not start the job")
            return instead
        say(f"{said}: {node} runs its part all the same")
        head = head.addr
    env = os.environ | {"OVERCAST_NODE_RANK": str(rank), "OVERCAST_HEAD_ADDR": head}
    say(f"{node} is rank {rank} of {nodes}, head {head}")
    if logs is None:
        return run_job(cmd, env, should_stop, poll)
    return ship_logs(logs, rank, should_stop, lambda out, stop: run_job(cmd, env, stop, poll, out))


def ship_logs(
    logs: LogShipping,
    rank: int | str,
    should_stop: ShouldStop,
    run: Callable[[Path | None, ShouldStop], tuple[int, bool]],
) -> tuple[int, bool]:
    """``run`` the job with its output in a local file that is uploaded as it grows, and more often once
    ``should_stop`` has said stop (``run`` asks it through the ``ShouldStop`` it gets). Nothing here fails
    the job: without a safe folder or a local file it runs with its output on the console, as before."""
    try:
        folder = log_dir(logs.url, logs.job, logs.attempt, rank)
        out = Path(tempfile.mkdtemp(prefix="overcast-logs.")) / "job.log"
        out.touch()
    except (ValueError, OSError) as exc:
        say(f"no log upload: {exc}")
        return run(None, should_stop)
    say(f"uploading the job's output to {redact(folder)} every {logs.every:g}s")
    with shipping(PartShipper(folder, out, sys.stdout.buffer), logs.every) as hurry:

        def stopping() -> str | None:
            why = should_stop()
            if why:
                hurry()
            return why

        return run(out, stopping)


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
