"""The node agent of a GCP instance launched by overcast (started by the startup-script metadata):

    python -m overcast.backends.gcp_agent --project P --job J --attempt A --nodes N -- CMD

1. Asks the metadata server (``Metadata-Flavor: Google``) for its instance name and zone; its rank is the
   name's suffix (``oc-<gang>-<rank>``: one bulkInsert gives every instance the same labels).
2. Labels its instance ``overcast-agent=up``, then waits until every rank of its gang has done the same:
   the head address is rank 0's primary internal IP (``networkInterfaces[0].networkIP``). A rank whose
   job has already ended (labelled ``overcast-exit``: a job of a second) counts, even stopped. If rank
   0 has already ended, it stops waiting at once: see ``cloud_agent.HeadEnded`` (a failed head: exit
   ``HEAD_FAILED`` without running the job).
3. Runs the job with the OVERCAST_* contract (``node_agent.run_job``).
4. While it runs, every ``--poll`` seconds reads its own instance through the API (the label
   ``overcast-stop``, set by ``GcpBackend.stop``, or the instance stopping) and the metadata server's
   ``instance/preempted`` (TRUE once a spot preemption has begun): either sends the job SIGTERM.
5. When the job ends, labels its instance ``overcast-exit=<code>`` (and ``overcast-sigterm=1``) and stops
   it, even when the agent itself failed (code 125): a node must never stay up with nothing running. Not
   delete: Compute forgets a deleted instance at once, and the exit label with it (see ``gcp_gangs``).

Credentials: the instance's service account through the metadata server (``google.auth.compute_engine``),
which needs ``compute.instances.get/list/setLabels/stop`` in the project. The metadata server is
``GCE_METADATA_HOST`` (google-auth's own variable; default ``metadata.google.internal``).
"""

from __future__ import annotations

import os
import sys
import urllib.request
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

GANG_WAIT_SECONDS = 900.0  # how long the agent waits for every rank's agent (A3 machines boot slowly)


def metadata(path: str) -> str:
    """GET computeMetadata/v1/<path> as text."""
    host = os.environ.get("GCE_METADATA_HOST") or "metadata.google.internal"
    req = urllib.request.Request(f"http://{host}/computeMetadata/v1/{path}",
                                 headers={"Metadata-Flavor": "Google"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode()


def instances_client(endpoint: str | None) -> Any:
    from google.auth import compute_engine
    from google.cloud import compute_v1

    kw: dict[str, Any] = {"credentials": compute_engine.Credentials(), "transport": "rest"}
    if endpoint:
        kw["client_options"] = {"api_endpoint": endpoint}
    return compute_v1.InstancesClient(**kw)


def find_head(
    client: Any, project: str, zone: str, me: str, job: str, attempt: str, nodes: int
) -> str | HeadEnded | None:
    """Rank 0's internal IP, once every rank's agent has labelled its instance (a rank that has already
    ended counts, its instance stopped or not); how rank 0 ended, at once, when it already has (labelled
    its exit); None when the gang was stopped before that (the job never starts)."""
    from overcast.backends.gcp_client import LIVE_STATES, call, guarded, label_value, read_retry
    from overcast.backends.gcp_gangs import TAG, private_ip, rank_of

    gang = me.rsplit("-", 1)[0] + "-"
    wanted = f'labels.{TAG}job = "{label_value(job)}" AND labels.{TAG}attempt = "{label_value(attempt)}"'

    def look() -> GangLook:
        pages = call("list instances", client.list, project=project, zone=zone, filter=wanted,
                     retry=read_retry())  # fmt: skip
        seen = GangLook()
        for inst in guarded("list instances", list, pages):
            if not inst.name.startswith(gang):
                continue
            seen.stopped = seen.stopped or (inst.name == me and TAG + "stop" in inst.labels)
            # a stopped instance keeps its labels and its internal IP
            live = inst.status in LIVE_STATES and TAG + "agent" in inst.labels
            seen.add(rank_of(inst), private_ip(inst), inst.labels, TAG, live)
        return seen

    return wait_for_gang(look, nodes, GANG_WAIT_SECONDS, 1.0, f"{job}/{attempt}")


def main(argv: list[str]) -> int:
    parsed = parse_args(
        "overcast.backends.gcp_agent", argv, 5.0, [("--project", True), ("--endpoint", False)]
    )
    if parsed is None:
        return 2
    args, cmd = parsed

    from overcast.backends.gcp_client import call, read_retry, set_labels
    from overcast.backends.gcp_gangs import TAG, rank_from_name

    name, zone = metadata("instance/name"), metadata("instance/zone").rsplit("/", 1)[-1]
    client = instances_client(args.endpoint)
    where = {"project": args.project, "zone": zone, "instance": name}

    def start() -> tuple[int, bool]:
        # "the agent runs": the backend reports STARTED only once every rank says so
        set_labels(client, args.project, zone, name, {TAG + "agent": "up"})
        head = find_head(client, args.project, zone, name, args.job, args.attempt, args.nodes)
        if head is None:
            say("stopped before the job started")
            return STOPPED_BEFORE_START, True

        def should_stop() -> str | None:
            try:
                if metadata("instance/preempted").strip().upper() == "TRUE":
                    return "spot preemption"
                inst = call("get instance", client.get, **where, retry=read_retry())
            except Exception as exc:  # an API hiccup: look again at the next poll
                say(f"stop check: {exc}")
                return None
            if TAG + "stop" in inst.labels:
                return "stop label"
            return "instance stopping" if inst.status in ("STOPPING", "SUSPENDING") else None

        return run_rank(cmd, name, rank_from_name(name), args.nodes, head, should_stop, args.poll, args.logs)

    def stop() -> None:  # not delete: the exit label must outlive the job (see gcp_gangs)
        call("stop instance", client.stop_unary, **where)

    return serve(name, TAG, start, lambda labels: set_labels(client, args.project, zone, name, labels), stop,
                 how="stopping")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
