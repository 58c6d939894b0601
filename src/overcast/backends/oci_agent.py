"""The node agent of an OCI instance launched by overcast (started by the cloud-init user-data):

    python -m overcast.backends.oci_agent --region R --compartment C --job J --attempt A --nodes N -- CMD

1. Asks the instance metadata service (IMDS v2, ``Authorization: Bearer Oracle``) for its instance id,
   its rank (its own freeform tag ``overcast-rank``, set at launch) and its private IP (``vnics/``).
2. Tags its instance ``overcast-agent=up`` and ``overcast-addr=<private IP>``, then waits until every
   rank of its gang has done the same: the head address is rank 0's ``overcast-addr``. If rank 0 has
   already ended (tagged ``overcast-exit``: a job of a second), it stops waiting at once: see
   ``cloud_agent.HeadEnded`` (a failed head: exit ``HEAD_FAILED`` without running the job).
3. Runs the job with the OVERCAST_* contract (``node_agent.run_job``).
4. While it runs, reads its own instance through the API every ``--poll`` seconds: the tag
   ``overcast-stop`` (set by ``OciBackend.stop``) or the instance terminating sends the job SIGTERM. Not
   the metadata service: OCI documents that changes can take up to a minute to show there.
5. When the job ends, tags its instance ``overcast-exit=<code>`` (and ``overcast-sigterm=1``) and
   terminates it, even when the agent itself failed (code 125): a node must never stay up with nothing
   running.

Credentials: instance principals (the node's dynamic group needs ``use instances`` / ``read instances``
in the compartment), or an SDK config file named by ``OVERCAST_OCI_CONFIG_FILE``. The metadata endpoint
is ``OVERCAST_OCI_METADATA_URL`` (default ``http://169.254.169.254/opc/v2``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
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

IMDS_DEFAULT = "http://169.254.169.254/opc/v2"
GANG_WAIT_SECONDS = 900.0  # how long the agent waits for every rank's agent (BM shapes boot slowly)


def metadata(path: str) -> Any:
    """GET <IMDS>/<path> as JSON (IMDS v2 wants the header ``Authorization: Bearer Oracle``)."""
    base = os.environ.get("OVERCAST_OCI_METADATA_URL") or IMDS_DEFAULT
    req = urllib.request.Request(f"{base.rstrip('/')}/{path}", headers={"Authorization": "Bearer Oracle"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read().decode())


def compute_client(region: str, endpoint: str | None) -> Any:
    import oci

    from overcast.backends.oci_client import READ_RETRY, TIMEOUT

    kw: dict[str, Any] = {"retry_strategy": READ_RETRY, "timeout": TIMEOUT}
    if endpoint:
        kw["service_endpoint"] = endpoint
    config_file = os.environ.get("OVERCAST_OCI_CONFIG_FILE")
    if config_file:
        config = oci.config.from_file(config_file) | {"region": region}
        return oci.core.ComputeClient(config, **kw)
    signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
    return oci.core.ComputeClient({"region": region}, signer=signer, **kw)


def find_head(
    compute: Any, compartment: str, me: str, job: str, attempt: str, nodes: int, poll: float
) -> str | HeadEnded | None:
    """Rank 0's private IP, once every rank's agent has tagged its instance; how rank 0 ended, at once,
    when it already has (tagged its exit); None when the gang was stopped before that (the job never
    starts)."""
    from overcast.backends.oci_client import LIVE_STATES, TAG, list_instances

    deadline = time.monotonic() + GANG_WAIT_SECONDS
    while True:
        found = list_instances(compute, compartment)
        ranks, ended = {}, None
        for inst in found:
            t = inst.freeform_tags or {}
            if inst.id == me and TAG + "stop" in t:
                return None
            if t.get(TAG + "job") != job or t.get(TAG + "attempt") != attempt:
                continue
            if t.get(TAG + "rank") == "0":
                ended = ended or head_ended(t, TAG, t.get(TAG + "addr", ""))
            # a rank whose agent was up and whose job has already ended (a quick one, while this
            # rank still looked) counts as well: without it rank 0 waited out GANG_WAIT_SECONDS
            if TAG + "addr" in t and (inst.lifecycle_state in LIVE_STATES or TAG + "exit" in t):
                ranks[t.get(TAG + "rank")] = t[TAG + "addr"]
        if ended is not None:
            return ended
        if len(ranks) >= nodes and "0" in ranks:
            return ranks["0"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"gang {job}/{attempt}: {len(ranks)} of {nodes} agents after waiting")
        time.sleep(min(poll, 1.0))


def main(argv: list[str]) -> int:
    options = [("--region", True), ("--compartment", True), ("--endpoint", False)]
    parsed = parse_args("overcast.backends.oci_agent", argv, 5.0, options)
    if parsed is None:
        return 2
    args, cmd = parsed

    from overcast.backends.oci_client import TAG, call, set_tags

    me = metadata("instance/")
    iid, rank = me["id"], (me.get("freeformTags") or {}).get(TAG + "rank", "0")
    vnics = metadata("vnics/")
    addr = vnics[0]["privateIp"] if vnics else "127.0.0.1"
    compute = compute_client(args.region, args.endpoint)

    def start() -> tuple[int, bool]:
        # "the agent runs": the backend reports STARTED only once every rank says so
        set_tags(compute, iid, {TAG + "agent": "up", TAG + "addr": addr})
        head = find_head(compute, args.compartment, iid, args.job, args.attempt, args.nodes, args.poll)
        if head is None:
            say("stopped before the job started")
            return STOPPED_BEFORE_START, True

        def should_stop() -> str | None:
            try:
                inst = call(compute, "get_instance", iid).data
            except Exception as exc:  # an API hiccup: look again at the next poll
                say(f"stop check: {exc}")
                return None
            if TAG + "stop" in (inst.freeform_tags or {}):
                return "stop tag"
            return "instance terminating" if inst.lifecycle_state in ("STOPPING", "TERMINATING") else None

        return run_rank(cmd, iid, rank, args.nodes, head, should_stop, args.poll, args.logs)

    def terminate() -> None:
        call(compute, "terminate_instance", iid, preserve_boot_volume=False)

    return serve(iid, TAG, start, lambda tags: set_tags(compute, iid, tags), terminate)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
