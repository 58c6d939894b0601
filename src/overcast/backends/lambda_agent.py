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
   and terminates it (one or two polls), at most ``--linger`` seconds (a controller that is down), then
   terminates itself. A stopped gang's nodes terminate at once (no outcome is read for them).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

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
    tags_of,
)
from overcast.backends.lambda_gangs import stop_asked

GANG_WAIT_SECONDS = 900.0  # how long the agent waits for every rank's agent


def find_self(api: LambdaApi, owner: str, launch: str, poll: float) -> dict[str, Any]:
    """This node's instance: the one of ``owner`` tagged with this launch's nonce."""
    deadline = time.monotonic() + GANG_WAIT_SECONDS
    while True:
        try:
            found = api.list_instances()
        except Exception as exc:  # an API hiccup at boot (429, 5xx): without its id the node cannot report
            say(f"finding this instance: {exc}")
            found = []
        for inst in found:
            t = tags_of(inst)
            if t.get(TAG + "launch") == launch and t.get(TAG + "backend") == owner:
                return inst
        if time.monotonic() > deadline:
            raise RuntimeError(f"no instance tagged {TAG}launch={launch} in the listing")
        time.sleep(min(poll, 1.0))


def find_head(api: LambdaApi, me: dict[str, Any], nodes: int, poll: float) -> str | HeadEnded | None:
    """Rank 0's private IP, once every rank's agent has tagged its instance; how rank 0 ended, at once,
    when it already has; None when the gang was stopped before that (the job never starts)."""
    mine = tags_of(me)
    gang = {k: mine.get(TAG + k) for k in ("backend", "job", "attempt")}
    deadline = time.monotonic() + GANG_WAIT_SECONDS
    while True:
        ranks, ended = {}, None
        for inst in api.list_instances():
            t = tags_of(inst)
            if inst.get("id") == me["id"] and stop_asked(inst):
                return None
            if any(t.get(TAG + k) != v for k, v in gang.items()):
                continue
            addr = str(inst.get("private_ip") or inst.get("ip") or "")
            if t.get(TAG + "rank") == "0":
                ended = ended or head_ended(t, TAG, addr)
            if inst.get("status") in LIVE_STATES and TAG + "agent" in t:
                ranks[t.get(TAG + "rank")] = addr
        if ended is not None:
            return ended
        if len(ranks) >= nodes and "0" in ranks:
            return ranks["0"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"gang {gang['job']}/{gang['attempt']}: {len(ranks)} of {nodes} agents")
        time.sleep(min(poll, 1.0))


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

        return run_rank(cmd, iid, rank, args.nodes, head, should_stop, args.poll)

    def end() -> None:
        """Wait for the backend to read the exit and terminate this instance; else terminate it."""
        deadline = time.monotonic() + float(args.linger or 600.0)
        while not stopped and time.monotonic() < deadline:
            try:
                why = look()
            except Exception as exc:
                say(f"linger check: {exc}")
                why = None
            if why in ("instance gone", "instance terminating"):
                return
            if why is not None:  # a stopped gang: nobody reads its outcome
                break
            time.sleep(args.poll)
        api.terminate([iid])

    return serve(iid, TAG, start, lambda tags: api.set_tags(iid, tags), end, how="ending")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
