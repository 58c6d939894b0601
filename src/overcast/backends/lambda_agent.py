"""The node agent of a Lambda instance launched by overcast (started by the cloud-init user-data):

    python -m overcast.backends.lambda_agent --api URL --key-file F --owner O --job J --attempt A
        --nodes N --poll S --launch NONCE --linger S -- CMD

Lambda has no instance metadata service, so everything goes through the public API, with the account's
API key read from ``--key-file`` (root-only, written by the user-data; never passed on to the job).

1. Finds its own instance in the listing: the one tagged ``overcast-launch=NONCE`` (its launch request's
   nonce); its rank is its ``overcast-rank`` tag.
2. Tags its instance ``overcast-agent=up`` and waits until every rank has: the head address is rank 0's
   private IP (from the API). If rank 0 has already ended, it stops waiting at once
   (``cloud_agent.HeadEnded``).
3. Runs the job with the OVERCAST_* contract (``node_agent.run_job``); every ``--poll`` seconds reads
   its instance: renamed ``overcast-stop*`` by the backend, or terminating, sends the job SIGTERM.
4. Tags ``overcast-exit=<code>`` (and ``overcast-sigterm=1``, ``overcast-ended-at``), then *lingers*:
   Lambda forgets terminated instances soon, so the instance stays until the backend has read the exit
   and terminates it (one or two polls after the gang's last rank ended). If it has not after
   ``--linger`` seconds (a controller that is down), the node terminates itself, but not while another
   rank of its gang still runs (live, no exit tag), and not until ``--linger`` seconds after the last
   rank ended: a vanished rank would read as a lost node. A stopped gang's nodes terminate at once (no
   outcome is read for them).

An API error (a 429 or 5xx that outlasted the client's retries, an unreachable endpoint) never ends the
agent while it waits: it looks again, after a longer pause on 429s; its own terminate is tried a few
times, then left to the backend's poll (which terminates the nodes of a gang it has reported).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from overcast.backends.cloud_agent import (
    STOPPED_BEFORE_START,
    HeadEnded,
    head_ended,
    parse_args,
    run_rank,
    say,
    serve,
)
from overcast.backends.lambda_client import (
    GONE_STATES,
    LIVE_STATES,
    TAG,
    LambdaApi,
    LambdaError,
    LambdaSettings,
    RateLimited,
    tags_of,
)
from overcast.backends.lambda_gangs import ended_at, stop_asked

GANG_WAIT_SECONDS = 900.0  # how long the agent waits for every rank's agent
RATE_LIMIT_PAUSE = 10.0  # after a 429 that outlasted the client's retries: seconds, doubled per 429 in a row
RATE_LIMIT_PAUSE_MAX = 120.0
TERMINATE_ATTEMPTS = 4  # of the node's own terminate; then the backend's poll terminates it
GONE = ("instance gone", "instance terminating")  # look()'s reasons that need no terminate

T = TypeVar("T")
Instance = dict[str, Any]


@dataclass(slots=True)
class Patient:
    """The API calls of an agent that waits: an error is said and answered with None (the caller looks
    again), and after 429s the pause before the next look grows."""

    poll: float  # the pause between two looks when Lambda is not rate-limiting
    limited: int = 0  # 429s in a row

    def call(self, fn: Callable[[], T], what: str) -> T | None:
        try:
            result = fn()
        except Exception as exc:  # 429, 5xx, unreachable (after the client's retries): not fatal here
            self.failed(exc, what)
            return None
        self.limited = 0
        return result

    def failed(self, exc: Exception, what: str) -> None:
        say(f"{what}: {exc}")
        self.limited = self.limited + 1 if isinstance(exc, RateLimited) else 0

    def wait(self) -> float:
        """Seconds until the next look."""
        if not self.limited:
            return self.poll
        # the whole account is over its limit: every node asking again at once would keep it there
        return max(self.poll, min(RATE_LIMIT_PAUSE * 2 ** (self.limited - 1), RATE_LIMIT_PAUSE_MAX))

    def pause(self) -> None:
        time.sleep(self.wait())


def gang_of(found: list[Instance], me: Instance) -> list[Instance]:
    """The instances of ``me``'s gang (same backend, job and attempt) in the listing ``found``."""
    mine = tags_of(me)
    keys = [TAG + k for k in ("backend", "job", "attempt")]
    return [i for i in found if all(tags_of(i).get(k) == mine.get(k) for k in keys)]


def find_self(api: LambdaApi, owner: str, launch: str, poll: float) -> Instance:
    """This node's instance: the one of ``owner`` tagged with this launch's nonce."""
    deadline = time.monotonic() + GANG_WAIT_SECONDS
    patient = Patient(min(poll, 1.0))
    while True:
        for inst in patient.call(api.list_instances, "finding this instance") or []:
            t = tags_of(inst)
            if t.get(TAG + "launch") == launch and t.get(TAG + "backend") == owner:
                return inst
        if time.monotonic() > deadline:
            raise RuntimeError(f"no instance tagged {TAG}launch={launch} in the listing")
        patient.pause()


def find_head(api: LambdaApi, me: Instance, nodes: int, poll: float) -> str | HeadEnded | None:
    """Rank 0's private IP, once every rank's agent has tagged its instance; how rank 0 ended, at once,
    when it already has; None when the gang was stopped before that (the job never starts)."""
    deadline = time.monotonic() + GANG_WAIT_SECONDS
    patient = Patient(min(poll, 1.0))
    while True:
        ranks, ended = {}, None
        found = patient.call(api.list_instances, "looking for the gang")
        for inst in gang_of(found or [], me):
            t = tags_of(inst)
            if inst.get("id") == me["id"] and stop_asked(inst):
                return None
            addr = str(inst.get("private_ip") or inst.get("ip") or "")
            if t.get(TAG + "rank") == "0":
                ended = ended or head_ended(t, TAG, addr)
            # a rank whose job has already ended counts too, whatever became of its instance since
            if (inst.get("status") in LIVE_STATES and TAG + "agent" in t) or TAG + "exit" in t:
                ranks[t.get(TAG + "rank")] = addr
        if ended is not None:
            return ended
        if len(ranks) >= nodes and "0" in ranks:
            return ranks["0"]
        if time.monotonic() > deadline:
            gang = "/".join(tags_of(me).get(TAG + k, "?") for k in ("job", "attempt"))
            raise RuntimeError(f"gang {gang}: {len(ranks)} of {nodes} agents")
        patient.pause()


def gang_still_runs(found: list[Instance], me: Instance, linger: float) -> str | None:
    """Why this ended node must not terminate itself yet (its linger is over), or None: another rank of
    its gang is live without an exit tag, or the last rank ended less than ``linger`` seconds ago (its
    exit must be read before this node vanishes: the backend would count a vanished rank as lost)."""
    gang = [i for i in gang_of(found, me) if i.get("id") != me["id"]]
    running = [i for i in gang if i.get("status") in LIVE_STATES and TAG + "exit" not in tags_of(i)]
    if running:
        return "rank " + ", ".join(sorted(tags_of(i).get(TAG + "rank", "?") for i in running)) + " runs"
    last = max((t for t in map(ended_at, gang) if t is not None), default=0.0)
    return f"a rank ended at {last:.0f}" if time.time() < last + linger else None


def linger(api: LambdaApi, me: Instance, seconds: float, poll: float, look: Callable[[], str | None]) -> bool:
    """Wait for the backend to read this node's exit and terminate it. True: the instance is going (no
    need to terminate it); False: terminate it now (a stop request, or nobody came: see the docstring)."""
    deadline = time.time() + seconds
    patient, said = Patient(poll), False
    while True:
        if time.time() < deadline:
            why = patient.call(look, "linger check")
        else:  # the linger is over: the gang's listing says whether this node may go
            found = patient.call(api.list_instances, "linger: the gang")
            why = None if found is None else view(found, me)
            wait = gang_still_runs(found, me, seconds) if found is not None and why is None else ""
            if wait is None:
                return False
            if wait and not said:
                say(f"linger over, but {wait}: this node waits for its gang")
                said = True
        if why in GONE:
            return True
        if why is not None:  # a stopped gang: nobody reads its outcome
            return False
        patient.pause()


def view(found: list[Instance], me: Instance) -> str | None:
    """``look``'s answer from a listing: why this node should end now, or None."""
    inst = next((i for i in found if i.get("id") == me["id"]), None)
    if inst is None:
        return "instance gone"
    if stop_asked(inst):
        return "stop request"
    return "instance terminating" if inst.get("status") in GONE_STATES else None


def terminate(api: LambdaApi, iid: str, poll: float) -> None:
    """Terminate this node's instance: a few tries (longer pauses after 429s), then left to the backend's
    poll, which terminates the live nodes of every gang it has reported."""
    patient = Patient(poll)
    for attempt in range(TERMINATE_ATTEMPTS):
        if attempt:
            patient.pause()
        try:
            api.terminate([iid])
            return
        except LambdaError as exc:  # not a hiccup (gone already, refused for good): retrying won't help
            say(f"terminating {iid}: {exc}")
            return
        except Exception as exc:
            patient.failed(exc, f"terminating {iid}")
    say(f"could not terminate {iid}: left to the backend's poll")


def main(argv: list[str]) -> int:
    options = [
        ("--api", True),
        ("--key-file", True),
        ("--owner", True),
        ("--launch", True),
        ("--linger", False),
    ]
    parsed = parse_args("overcast.backends.lambda_agent", argv, 5.0, options)
    if parsed is None:
        return 2
    args, cmd = parsed
    key = Path(args.key_file).read_text().strip()  # kept in this process only: the job never gets it
    settings = LambdaSettings(name="node", region="", instance_types=(), ssh_key_name="", endpoint=args.api)
    api = LambdaApi(settings, key=key)
    me = find_self(api, args.owner, args.launch, args.poll)
    iid, rank = str(me["id"]), tags_of(me).get(TAG + "rank", "0")
    stopped = False

    def look() -> str | None:
        """Why the job should stop now (a stop request, the instance going), or None."""
        nonlocal stopped
        try:
            inst = api.get_instance(iid)
        except LambdaError as exc:
            return "instance gone" if exc.status == 404 else None
        if stop_asked(inst):
            stopped = True
            return "stop request"
        return "instance terminating" if inst.get("status") in GONE_STATES else None

    def start() -> tuple[int, bool]:
        api.set_tags(iid, {TAG + "agent": "up"})  # the backend reports STARTED once every rank says so
        head = find_head(api, me, args.nodes, args.poll)
        if head is None:
            say("stopped before the job started")
            return STOPPED_BEFORE_START, True

        def should_stop() -> str | None:
            try:
                return look()
            except Exception as exc:  # an API hiccup: look again at the next poll
                say(f"stop check: {exc}")
                return None

        return run_rank(cmd, iid, rank, args.nodes, head, should_stop, args.poll, args.logs)

    def end() -> None:
        """Linger for the backend to read the exit and terminate this instance; else terminate it."""
        if stopped or not linger(api, me, float(args.linger or 600.0), args.poll, look):
            terminate(api, iid, args.poll)

    return serve(iid, TAG, start, lambda tags: api.set_tags(iid, tags), end, how="ending")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
