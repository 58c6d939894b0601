"""Replicas an older ``overcast up`` left on providers of their own.

Before the services shared the jobs' local nodes, ``overcast up`` ran its replicas under
``<cluster home>/serve/local/<name>``. Nothing watches that folder now, and the services' ledgers name the
same backends, so their replicas there would look gone and run on unreached, beside new ones on the
shared nodes. They are stopped once at startup; their services then launch them again (their bills end
as "gone" when adoption misses them). Only stored services' replicas: ``overcast serve FILE`` on its own
still runs there (its keys are service names, the server's are ``s-`` ids).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from overcast.backends.base import Backend, is_replica_launch
from overcast.backends.local import LocalBackend
from overcast.serve.ledger import parse_replica_job_id


def stop_old_replicas(
    backends: Sequence[Backend], services: Collection[str], log: Callable[[str], None]
) -> list[str]:
    """Stop ``services``' replica launches in the old folders beside ``backends`` (the local ones: no other
    backend ran replicas then); returns their job ids."""
    stopped = []
    for backend in backends:
        if not isinstance(backend, LocalBackend):
            continue
        home = backend.home / "serve"
        if not (home / "local" / backend.cluster.name / "launches").is_dir():
            continue  # never ran there: create nothing
        old = LocalBackend(backend.cluster, home=home, owns=is_replica_launch)
        for job_id, attempt in old.active():
            parsed = parse_replica_job_id(job_id)
            if parsed is not None and parsed[0] in services:
                old.stop(job_id, attempt, grace_seconds=2.0)
                stopped.append(job_id)
                log(f"stopped replica {job_id} of an older overcast up ({home}): relaunched on shared nodes")
    return stopped
