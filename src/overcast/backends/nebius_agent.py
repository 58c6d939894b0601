"""The node agent of a Nebius instance launched by overcast (started by the cloud-init user-data):

    python -m overcast.backends.nebius_agent --project P --instance-name NAME --token-endpoint URL
        [--api HOST:PORT [--insecure 1]] --job J --attempt A --nodes N --poll S -- CMD

Credentials: the instance's service account (``spec.service_account_id``), whose tokens the agent gets
from ``--token-endpoint`` (the SDK's IMDS bearer: ``Metadata: true``); it needs get, list, update and
stop on the project's instances. No key is written to the node.

1. Finds its own instance by name (GetByName: the name is fixed at launch and handed over here); its
   rank is its ``overcast-rank`` label.
2. Labels its instance ``overcast-agent=up`` and waits until every rank has: the head address is rank 0's
   private IP. A rank whose job has already ended (labelled ``overcast-exit``) counts, even stopped. If
   rank 0 has already ended, it stops waiting at once (``cloud_agent.HeadEnded``).
3. Runs the job with the OVERCAST_* contract (``node_agent.run_job``); every ``--poll`` seconds reads its
   instance: the label ``overcast-stop`` (the backend's stop) or the instance stopping (a preemption)
   sends the job SIGTERM.
4. Labels ``overcast-exit=<code>`` (and ``overcast-sigterm``, ``overcast-ended-at``) and stops its
   instance (not delete: the labels must outlive the job until the backend has read them).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from overcast.backends.cloud_agent import (
    STOPPED_BEFORE_START,
    GangLook,
    HeadEnded,
    parse_args,
    run_rank,
    say,
    serve,
    wait_for_gang,
)
from overcast.backends.nebius_client import LIVE_STATES, TAG, NebiusApi, NebiusSettings, state_of
from overcast.backends.nebius_gangs import labels_of, private_ip, rank_of

GANG_WAIT_SECONDS = 900.0  # how long the agent waits for every rank's agent (8-GPU hosts boot slowly)


def find_self(api: NebiusApi, name: str, poll: float) -> Any:
    """This node's instance (retried: an API hiccup at boot must not leave the node unreported)."""
    deadline = time.monotonic() + GANG_WAIT_SECONDS
    while True:
        try:
            inst = api.by_name(name)
            if inst is not None:
                return inst
        except Exception as exc:
            say(f"finding this instance: {exc}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no instance named {name}")
        time.sleep(min(poll, 1.0))


def find_head(api: NebiusApi, me: Any, nodes: int, poll: float) -> str | HeadEnded | None:
    """Rank 0's private IP, once every rank's agent has labelled its instance (a rank that has already
    ended counts, its instance stopped or not); how rank 0 ended, at once, when it already has; None when
    the gang was stopped before that (the job never starts)."""
    mine = labels_of(me)
    gang = {k: mine.get(TAG + k) for k in ("backend", "job", "attempt")}

    def look() -> GangLook:
        seen = GangLook()
        for inst in api.list_instances():
            labels = labels_of(inst)
            if any(labels.get(TAG + k) != v for k, v in gang.items()):
                continue
            seen.stopped = seen.stopped or (inst.metadata.id == me.metadata.id and TAG + "stop" in labels)
            # a stopped instance keeps its labels and its address
            live = state_of(inst) in LIVE_STATES and TAG + "agent" in labels
            seen.add(rank_of(inst), private_ip(inst), labels, TAG, live)
        return seen

    return wait_for_gang(look, nodes, GANG_WAIT_SECONDS, min(poll, 1.0), f"{gang['job']}/{gang['attempt']}")


def main(argv: list[str]) -> int:
    options = [("--project", True), ("--instance-name", True), ("--token-endpoint", True),
               ("--api", False), ("--insecure", False)]  # fmt: skip
    parsed = parse_args("overcast.backends.nebius_agent", argv, 5.0, options)
    if parsed is None:
        return 2
    args, cmd = parsed
    from nebius.aio.token.imds import Bearer

    settings = NebiusSettings(name="node", project_id=args.project, region="", instance_types=(),
                              subnet_id="", endpoint=args.api, insecure=bool(args.insecure))  # fmt: skip
    api = NebiusApi(settings, credentials=Bearer(args.token_endpoint))
    me = find_self(api, args.instance_name, args.poll)
    iid, name = str(me.metadata.id), str(me.metadata.name)

    def start() -> tuple[int, bool]:
        api.set_labels(iid, {TAG + "agent": "up"})  # the backend reports STARTED once every rank says so
        head = find_head(api, me, args.nodes, args.poll)
        if head is None:
            say("stopped before the job started")
            return STOPPED_BEFORE_START, True

        def should_stop() -> str | None:
            try:
                inst = api.get(iid)
            except Exception as exc:  # an API hiccup: look again at the next poll
                say(f"stop check: {exc}")
                return None
            if TAG + "stop" in labels_of(inst):
                return "stop label"
            return None if state_of(inst) in LIVE_STATES else f"instance {state_of(inst).lower()}"

        return run_rank(cmd, name, rank_of(me), args.nodes, head, should_stop, args.poll, args.logs)

    try:
        return serve(name, TAG, start, lambda labels: api.set_labels(iid, labels), lambda: api.stop(iid),
                     how="stopping")  # fmt: skip
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
