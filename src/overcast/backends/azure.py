"""The Azure backend: each gang is N VMs created through the official SDK (azure-mgmt-compute).

- **Pools.** The bundled catalog's Azure offers for the configured region and VM sizes: one pool per
  (size, zone, on-demand | spot), or per (size, region) when no zones are configured, with ``max_nodes``
  as capacity and our VMs as use. Spot is ``priority: Spot`` with eviction policy Delete.
- **Launch.** ARM has no all-or-nothing create (no MinCount): the N VMs are created in parallel, all in
  the pool's zone, and if any fails every one is deleted before the error is raised. VM names derive
  from (backend, job, attempt, rank), so a retried PUT (ARM's PUT is idempotent by name) creates no
  second VM. The custom data starts the node agent (``azure_agent``).
- **The end of a job** is written on the VM by the agent (tag ``overcast-exit``), which then deallocates
  its VM; the backend deletes the gang once it has delivered the outcome. A VM gone without that tag
  was lost (see ``azure_gangs``).
- **Stop.** Tag the gang ``overcast-stop``; the agent sees it in the instance metadata service and
  sends the job SIGTERM. Wait up to the grace period for the nodes to end, then delete the VMs.
- **Crash safety.** What runs is read from ARM by tag (``active()``). Local state
  (``$OVERCAST_HOME/azure/<name>/acked.json``): the acknowledged events and the gangs launched, because
  ARM forgets a deleted VM at once and a gang evicted whole must still be reported lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError

from overcast.backends.azure_client import (
    AzureApiError,
    AzureSettings,
    add_tags,
    call,
    compute_client,
    translate,
)
from overcast.backends.azure_customdata import custom_data
from overcast.backends.azure_gangs import Gang, group, power_state, provisioning
from overcast.backends.azure_vmspec import gang_name, group_body, vm_body, vm_name
from overcast.backends.base import Allocation, LaunchRequest, ProviderDown
from overcast.backends.cloud_backend import CloudBackend
from overcast.backends.cloud_gangs import gang_key, split_key
from overcast.catalog.offer import Offer
from overcast.placement.pool import Pool

NO_AGENT = "the node agent never started (does the image have python3 and overcast? see the boot diagnostics)"


class AzureBackend(CloudBackend):
    """Backend protocol for one Azure subscription + resource group + region (``azure:<name>``)."""

    provider = "azure"
    no_agent = NO_AGENT

    def __init__(
        self,
        settings: AzureSettings,
        *,
        home: Path | None = None,
        offers: list[Offer] | None = None,
        client: Any = None,
        credential: Any = None,
    ) -> None:
        if settings.max_nodes < 1 or not settings.vm_sizes:
            raise ValueError(f"azure {settings.name!r}: needs vm_sizes and max_nodes >= 1")
        self.compute = client if client is not None else compute_client(settings, credential)
        self._setup(settings, settings.vm_sizes, home, offers, fold_case=True)

    def _placed(self, offers: list[Offer]) -> list[Offer]:
        """The catalog prices Azure per region: the same offer in each configured zone."""
        if not self.settings.zones:
            return offers
        return [dataclasses.replace(o, zone=z) for o in offers for z in self.settings.zones]

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._own_pool(request)
        key = gang_key(request.job_id, request.attempt)
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            if existing is not None and len(existing.live) == request.num_nodes:  # a replayed apply
                return self._allocation(existing)
            state = self._state()
            state["launched"][key] = request.num_nodes  # before any PUT: a crash mid-launch is tracked
            self._save(state)
            names = [
                vm_name(self.settings.owner, request.job_id, request.attempt, r)
                for r in range(request.num_nodes)
            ]
            data = custom_data(self.settings, request)
            vms = self.compute.virtual_machines
            rg = self.settings.resource_group
            try:
                group_id = self._create_group(request, pool) if request.num_nodes > 1 else None
                bodies = [vm_body(self.settings, request, pool, r, data, group_id) for r in range(len(names))]
                # in parallel: creating a GPU VM takes minutes on Azure
                pollers = [
                    call("create VM", vms.begin_create_or_update, rg, name, body)
                    for name, body in zip(names, bodies, strict=True)
                ]
                for poller in pollers:
                    call("create VM", poller.result)
            except Exception:
                self._roll_back(request, names)  # all nodes or none
                raise
            return Allocation(request.job_id, request.attempt, self.name, handle=",".join(names))

    def _roll_back(self, request: LaunchRequest, names: list[str]) -> None:
        """Delete every VM of a failed launch (one that failed allocation exists too, in state Failed)."""
        vms, rg = self.compute.virtual_machines, self.settings.resource_group
        pollers = []
        for name in names:  # best effort: whatever survives is deleted by the next poll's clean-up
            with contextlib.suppress(Exception):
                pollers.append(vms.begin_delete(rg, name))
        for poller in pollers:
            with contextlib.suppress(Exception):
                poller.result()
        state, key = self._state(), gang_key(request.job_id, request.attempt)
        if key not in state["stopped"]:  # whatever survives (a VM, the group): the poll's clean-up
            state["stopped"].append(key)
        with contextlib.suppress(Exception):
            if self._gang(request.job_id, request.attempt) is None:
                self._drop(state, key, request.num_nodes)
        self._save(state)

    def _create_group(self, request: LaunchRequest, pool: Pool) -> str:
        """The gang's proximity placement group (one network spine), made before its VMs."""
        name = gang_name(self.settings.owner, request.job_id, request.attempt)
        groups = self.compute.proximity_placement_groups
        made = call(
            "create PPG",
            groups.create_or_update,
            self.settings.resource_group,
            name,
            group_body(self.settings, pool),
        )
        return str(made.id)

    def _drop(self, state: dict[str, Any], key: str, nodes: int) -> None:
        """Forget a gang whose VMs are all gone, once its placement group is deleted too."""
        if nodes > 1:
            name = gang_name(self.settings.owner, *split_key(key))
            call(
                "delete PPG",
                self.compute.proximity_placement_groups.delete,
                self.settings.resource_group,
                name,
            )
        state["launched"].pop(key, None)

    # -- stop, poll, active -------------------------------------------------------------------------

    # stop() tags the gang ``overcast-stop``: the agents see it in the instance metadata service and
    # SIGTERM the job; at the end of the grace period the gang's VMs are deleted.

    def _ask_stop(self, gang: Gang) -> None:
        for vm in gang.live:
            with contextlib.suppress(AzureApiError):  # gone since the list: nothing to ask
                self._tag(vm, {"overcast-stop": "1"})

    def _end(self, gang: Gang) -> None:
        self._delete(gang)

    def _clean_up(self, gang: Gang, state: dict[str, Any]) -> None:
        """Delete the VMs that ended (all of a stopped gang), then forget a gang with none left: the
        agents only deallocate, so their exit tags outlive the job until the outcome is delivered."""
        try:
            self._delete(gang, ended_only=gang.key not in state["stopped"])
            if not gang.vms and gang.key in state["launched"]:
                self._drop(state, gang.key, gang.nodes)
        except (AzureApiError, ProviderDown):  # must not escape the poll (the events before it): next poll
            return

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self, state: dict[str, Any] | None = None) -> list[Gang]:
        launched = (state or self._state())["launched"]
        # Power states FIRST: the agent tags its exit before it deallocates, so a VM that ends between
        # the reads shows "running" here and its exit tag in the later list. The other order saw no tag
        # then "deallocated": a finished job reported PREEMPTED, requeued, its exit tag deleted.
        power = self._powers()
        return group(self._list(), self.settings.owner, launched, power)

    def _gang(self, job_id: str, attempt: int) -> Gang | None:
        found = [
            g for g in group(self._list(), self.settings.owner) if (g.job_id, g.attempt) == (job_id, attempt)
        ]
        return found[0] if found else None

    def _list(self) -> list[Any]:
        rg = self.settings.resource_group
        return call("list VMs", lambda: list(self.compute.virtual_machines.list(rg)))

    def _powers(self) -> dict[str, str]:
        """VM id (lower case) -> power state of the resource group's VMs. The VM list carries none, and a
        VM stopped or deallocated outside overcast would look live forever (the job RUNNING, its disks or
        its compute billing). One status-only list of the subscription (the resource group's list takes
        ``$expand=instanceView`` only with a scale-set filter). An identity allowed to read only its
        resource group is refused (403): it gets no power states, and such VMs look live, as before."""
        vms = self.compute.virtual_machines
        try:
            found = list(vms.list_all(status_only="true"))
        except HttpResponseError as exc:
            if exc.status_code == 403:
                return {}
            raise translate("list VM states", exc) from exc
        except AzureError as exc:
            raise translate("list VM states", exc) from exc
        rg = f"/resourcegroups/{self.settings.resource_group}/".lower()
        ids = [(str(vm.id).lower(), power_state(vm)) for vm in found]
        return {vm_id: power for vm_id, power in ids if rg in vm_id and power}

    def _tag(self, vm: Any, extra: dict[str, str]) -> None:
        call("tag VM", add_tags, self.compute, self.settings.resource_group, vm.name, extra)

    def _delete(self, gang: Gang, ended_only: bool = False) -> None:
        """Delete the gang's VMs (all, or only those that ended or failed) without waiting: ARM carries on
        and the next poll sees them gone. A VM already being deleted is left alone."""
        vms, rg = self.compute.virtual_machines, self.settings.resource_group
        live = {vm.name for vm in gang.live}
        for vm in gang.vms:
            if provisioning(vm) == "Deleting" or (ended_only and vm.name in live):
                continue
            call("delete VM", vms.begin_delete, rg, vm.name, polling=False)

    def _allocation(self, gang: Gang) -> Allocation:
        names = ",".join(vm.name for vm in gang.live)
        return Allocation(gang.job_id, gang.attempt, self.name, handle=names)

    def _more_state(self, found: dict[str, Any]) -> dict[str, Any]:
        """The gangs launched (key -> nodes): ARM forgets a deleted VM at once, so a gang evicted whole
        is known only from here."""
        return {"launched": dict(found.get("launched", {}))}
