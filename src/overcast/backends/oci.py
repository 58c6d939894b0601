"""The OCI Compute backend: each gang is N ``launch_instance`` calls through the official SDK (``oci``).

- **Pools.** The bundled catalog's OCI offers for the configured region and shapes: one pool per (shape,
  availability domain, purchase), with the catalog's ids, ``max_nodes`` as capacity and our live
  instances as use. The catalog has no OCI preemptible prices today, so in practice pools are on-demand;
  a spot pool (given offers with a spot price) launches with ``preemptible_instance_config`` (terminate).
- **Launch.** OCI has no MinCount: the backend launches rank 0..N-1 one by one in the pool's AD, and if
  any launch fails it terminates every rank it launched and raises (all or none). Each instance carries
  freeform tags (job, attempt, rank, pool, nodes, backend) and a cloud-init user-data that starts the
  node agent (``oci_agent``), which finds the head and runs the job. A gang of N > 1 nodes of an RDMA
  shape first gets a compute cluster of its own (``oci_clusters``), which every rank names.
- **The end of a job** is written on the instance by the agent (tag ``overcast-exit``) before it
  terminates its own instance. An instance gone without that tag was lost (see ``oci_gangs``).
- **Stop.** Tag the gang ``overcast-stop``; each agent reads its tags and sends the job SIGTERM. Wait
  up to the grace period for the nodes to end by themselves, then terminate the rest. A gang's compute
  cluster is deleted by the poll once its instances are terminated (OCI refuses before).
- **Crash safety.** What runs is read from OCI (``list_instances`` of the compartment, filtered by our
  tags), so a restarted loop reconciles. Only event acknowledgements are kept on local disk
  (``$OVERCAST_HOME/oci/<name>/acked.json``); losing it replays the last outcomes, which the loop
  ignores as stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any

from oci.core import models

from overcast.backends import oci_clusters
from overcast.backends.base import Allocation, BackendEvent, CapacityError, LaunchRequest, ProviderDown
from overcast.backends.cloud_backend import CloudBackend
from overcast.backends.oci_client import (
    LAUNCH_RETRY,
    TAG,
    OciError,
    OciSettings,
    call,
    clients,
    list_instances,
    set_tags,
)
from overcast.backends.oci_gangs import Gang, group, rank_of
from overcast.backends.oci_userdata import user_data
from overcast.catalog.offer import Offer
from overcast.placement.pool import Pool, Purchase

log = logging.getLogger(__name__)
NO_AGENT = "the node agent never started (does the image have python3 and overcast? see the console)"


class OciBackend(CloudBackend):
    """Backend protocol for one OCI compartment + region (``oci:<name>``)."""

    provider = "oci"
    no_agent = NO_AGENT

    def __init__(
        self,
        settings: OciSettings,
        *,
        home: Path | None = None,
        offers: list[Offer] | None = None,
        compute: Any = None,
        identity: Any = None,
    ) -> None:
        if settings.max_nodes < 1 or not settings.shapes:
            raise ValueError(f"oci {settings.name!r}: needs shapes and max_nodes >= 1")
        if compute is None or identity is None:
            compute, identity = clients(settings)
        self.compute, self.identity = compute, identity
        self._ad_names: dict[str, str] | None = None
        self._listed: list[Gang] = []  # the poll's listing of our gangs, for the cluster sweep
        self._swept: set[str] = set()  # ended multi-node gangs the latest cluster sweep saw
        self._sweep_due = True  # a cluster may be left to delete (at start: one a crash may have left)
        self._setup(settings, settings.shapes, home, offers)

    def _in_account(self, pools: list[Pool]) -> list[Pool]:
        ads = self._ads()
        return [p for p in pools if (p.zone or "").upper() in ads]  # ADs this tenancy has

    def _ads(self) -> dict[str, str]:
        """Catalog AD name (US-ASHBURN-AD-1) -> the tenancy's AD name (Uocm:US-ASHBURN-AD-1): OCI prefixes
        AD names per tenancy, and launch_instance wants the prefixed one."""
        if self._ad_names is None:
            found = call(self.identity, "list_availability_domains", self.settings.compartment_id).data
            self._ad_names = {ad.name.split(":")[-1].upper(): ad.name for ad in found}
        return self._ad_names

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._own_pool(request)
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            live = existing.live if existing is not None else []
            have = {rank_of(i) for i in live}
            if len(have) == request.num_nodes:  # the same attempt again: launching is idempotent
                return self._allocation(live, request)
            ad = self._ads().get((pool.zone or "").upper())
            if ad is None:
                raise CapacityError(f"{pool.zone} is not available to this tenancy in {self.settings.region}")
            launched: list[str] = []
            clustered = oci_clusters.wanted(self.settings, pool.instance_type, request.num_nodes)
            cluster: str | None = None
            try:
                if clustered:
                    cluster = oci_clusters.ensure(self.compute, self.settings, request, pool.id, ad)
                for rank in range(request.num_nodes):
                    if rank in have:  # a replayed launch that had started some ranks: keep them
                        continue
                    details = self._details(request, pool, ad, rank, cluster)
                    token = _retry_token(self.settings.owner, request.job_id, request.attempt, rank)
                    reply = call(
                        self.compute, "launch_instance", details, opc_retry_token=token,
                        retry_strategy=LAUNCH_RETRY,
                    )  # fmt: skip
                    launched.append(reply.data.id)
            except Exception as exc:  # OCI has no all-or-nothing launch: roll back every rank of this gang
                self._silence(request.job_id, request.attempt)  # the loop has the error: no events
                ids = self._rollback_ids(request, exc, launched + [i.id for i in live], (OciError,), _id)
                for iid in ids:
                    self._terminate(iid)
                if clustered:  # empty (no rank launched): deleted now; else by the poll, once terminated
                    gone = cluster is not None and not ids and oci_clusters.delete(self.compute, cluster)
                    self._sweep_due |= not gone
                raise
            return self._allocation([*live, *launched], request)

    def _details(self, request: LaunchRequest, pool: Pool, ad: str, rank: int, cluster: str | None) -> Any:
        s = self.settings
        tags = {
            TAG + "backend": s.owner,
            TAG + "job": request.job_id,
            TAG + "attempt": str(request.attempt),
            TAG + "rank": str(rank),
            TAG + "pool": pool.id,
            TAG + "nodes": str(request.num_nodes),
        }
        metadata = {"user_data": user_data(s, request)}
        if s.ssh_authorized_keys:
            metadata["ssh_authorized_keys"] = s.ssh_authorized_keys
        preemptible = None
        if pool.purchase is Purchase.SPOT:
            action = models.TerminatePreemptionAction(type="TERMINATE", preserve_boot_volume=False)
            preemptible = models.PreemptibleInstanceConfigDetails(preemption_action=action)
        return models.LaunchInstanceDetails(
            availability_domain=ad,
            compartment_id=s.compartment_id,
            shape=pool.instance_type,
            display_name=f"overcast-{request.job_id}-{request.attempt}-{rank}",
            freeform_tags=tags,
            metadata=metadata,
            source_details=models.InstanceSourceViaImageDetails(image_id=s.image_id),
            create_vnic_details=models.CreateVnicDetails(subnet_id=s.subnet_id, assign_public_ip=False),
            preemptible_instance_config=preemptible,
            compute_cluster_id=cluster,  # the gang's RDMA network group, if it has one
        )

    def _terminate(self, instance_id: str) -> None:
        # gone already (404) or the API failing: what is left is found by tag at the next poll / stop
        with contextlib.suppress(OciError, ProviderDown):
            call(self.compute, "terminate_instance", instance_id, preserve_boot_volume=False)

    # -- stop, poll, active -------------------------------------------------------------------------

    # stop() tags the gang ``overcast-stop``: each agent reads its tags and SIGTERMs the job; at the end
    # of the grace period what is left is terminated.

    def _ask_stop(self, gang: Gang) -> None:
        for inst in gang.live:
            with contextlib.suppress(OciError):  # it may be terminating already
                set_tags(self.compute, inst.id, {TAG + "stop": "1"})

    def _end(self, gang: Gang) -> None:
        for inst in gang.live + gang.halted:  # a stopped instance bills for its boot volume: terminate it
            self._terminate(inst.id)
        self._sweep_due |= gang.nodes > 1  # its compute cluster: the poll deletes it once OCI has ended them

    def _poll(self, ended: list[tuple[str, int]]) -> list[BackendEvent]:
        """The shared poll (under the lock), then the cluster sweep, still under it; the ended attempts'
        logs are copied by poll() after the lock is released."""
        events = super()._poll(ended)
        try:  # the events are this poll's to deliver (and the next one's to acknowledge): never lost
            self._sweep_clusters()
        except Exception as exc:  # the next poll sweeps again (_sweep_due and _swept are left as they were)
            log.warning("%s: sweeping compute clusters failed, the next poll tries again: %r", self.name, exc)
        return events

    def _sweep_clusters(self) -> None:
        """Delete the compute clusters whose gangs have no instance left but TERMINATED ones (or none at
        all: a crash between creating the cluster and launching). It lists the clusters only when one may
        be left: a multi-node gang has ended since the last sweep, or a sweep, rollback or stop left one.
        Under the lock, as launch() is: no launch is between creating its cluster and its first rank."""
        ended = {g.key for g in self._listed if g.nodes > 1 and all(_terminated(i) for i in g.instances)}
        if not self._sweep_due and ended <= self._swept:
            return
        busy = {g.key for g in self._listed} - ended
        self._sweep_due = oci_clusters.sweep(self.compute, self.settings, busy)
        self._swept = ended

    def _clean_up(self, gang: Gang, state: dict[str, Any]) -> None:
        """Terminate the gang's instances stopped outside overcast (each poll, until they are: the gang is
        listed while they exist)."""
        for inst in gang.halted:
            self._terminate(inst.id)

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self, state: dict[str, Any] | None = None) -> list[Gang]:
        """Our gangs: ListInstances has no tag filter, so list the compartment (every page) and keep the
        instances whose ``overcast-backend`` tag is ours."""
        gangs = group(list_instances(self.compute, self.settings.compartment_id), self.settings.owner)
        if state is not None:  # poll()'s listing (or active()'s), made under the lock: the sweep's view
            self._listed = gangs
        return gangs

    def _gang(self, job_id: str, attempt: int) -> Gang | None:
        return next((g for g in self._gangs() if (g.job_id, g.attempt) == (job_id, attempt)), None)

    def _allocation(self, instances: list[Any], request: LaunchRequest) -> Allocation:
        ids = [i if isinstance(i, str) else i.id for i in instances]
        return Allocation(request.job_id, request.attempt, self.name, handle=",".join(ids))


def _terminated(instance: Any) -> bool:
    return instance.lifecycle_state == "TERMINATED"


def _retry_token(backend: str, job_id: str, attempt: int, rank: int) -> str:
    """OCI's idempotency key (at most 64 characters), unique per (backend, job, attempt, rank)."""
    return hashlib.sha256(f"{backend}/{job_id}/{attempt}/{rank}".encode()).hexdigest()[:64]


def _id(instance: Any) -> str:
    return str(instance.id)
