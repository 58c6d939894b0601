"""``sinfo --json`` nodes -> overcast pools: one pool per (partition, GPU type, GPUs per node).

A gang is placed inside one pool, and a Slurm partition of one node shape is one scheduling domain, so
that is the pool. Capacity counts usable nodes only (not down, drained, failed or unresponsive); a node
with any allocation counts as used, because overcast places whole nodes (jobs run ``--exclusive``).
``members_by_pool`` names each pool's nodes, so the backend can tell how many of a pool's used nodes are
overcast's own started jobs' (``expand_hostlist`` reads squeue's node lists).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from overcast.catalog.accelerators import canonical_name
from overcast.placement.pool import Pool, Purchase

_UNUSABLE_STATES = frozenset({"DOWN", "ERROR", "FUTURE", "UNKNOWN", "INVAL"})
_UNUSABLE_FLAGS = frozenset(
    {"DRAIN", "DRAINED", "DRAINING", "FAIL", "NOT_RESPONDING", "MAINTENANCE", "POWERED_DOWN", "POWER_DOWN",
     "POWERING_DOWN", "REBOOT_REQUESTED", "REBOOT_ISSUED", "INVALID_REG", "PLANNED"}
)  # fmt: skip
_BUSY_STATES = frozenset({"ALLOCATED", "MIXED", "COMPLETING"})
_GRES = re.compile(r"^gpu(?::(?P<type>[^:(,]+))?:(?P<count>\d+)")


@dataclass(frozen=True, slots=True)
class GpuGres:
    type: str  # Slurm's GRES type, e.g. "h100"; "" for untyped or no GPUs
    count: int


def parse_gpu_gres(gres: str) -> GpuGres:
    """``gpu:h100:8(S:0-1)`` -> GpuGres("h100", 8); the first GPU entry wins; none -> ("", 0)."""
    for part in (gres or "").split(","):
        m = _GRES.match(part.strip())
        if m:
            return GpuGres(m.group("type") or "", int(m.group("count")))
    return GpuGres("", 0)


def node_usable(node: dict[str, Any]) -> bool:
    state = str(node.get("state") or "unknown").upper()
    flags = {str(f).upper() for f in node.get("state_flags") or []}
    return state not in _UNUSABLE_STATES and not (flags & _UNUSABLE_FLAGS)


def node_busy(node: dict[str, Any]) -> bool:
    state = str(node.get("state") or "").upper()
    flags = {str(f).upper() for f in node.get("state_flags") or []}
    return state in _BUSY_STATES or "COMPLETING" in flags


def accelerator_name(gres_type: str, names: dict[str, str]) -> str:
    """The catalog's name for a GRES type ("h100" -> "H100"): the cluster's mapping, else the catalog's
    normalisation, else upper case."""
    if not gres_type:
        return ""
    return names.get(gres_type) or canonical_name(gres_type) or gres_type.upper()


def pools_from_nodes(
    nodes: list[dict[str, Any]],
    *,
    cluster: str,
    provider: str,
    region: str,
    price_per_node_hour: float,
    accelerator_names: dict[str, str] | None = None,
    partitions: tuple[str, ...] = (),
) -> list[Pool]:
    groups = _groups(nodes, partitions)
    pools = []
    partition_names = {p for p, _, _ in groups}
    for (partition, gres_type, gpus), members in sorted(groups.items()):
        usable = [n for n in members if node_usable(n)]
        accelerator = accelerator_name(gres_type, accelerator_names or {})
        shape = _shape(gres_type, gpus)
        cpus = [n["cpus"] for n in members if n.get("cpus")]
        memory = [n["real_memory"] for n in members if n.get("real_memory")]
        pools.append(
            Pool(
                id=_pool_id(cluster, partition, shape, partition_names, groups),
                provider=provider,
                region=region,
                zone=None,  # a cluster is one network: the pool itself
                instance_type=f"{partition}/{shape}",
                accelerator=accelerator,
                gpus_per_node=gpus,
                purchase=Purchase.RESERVED,
                price_per_node_hour=price_per_node_hour,
                capacity_nodes=len(usable),
                used_nodes=sum(1 for n in usable if node_busy(n)),
                backend=f"slurm:{cluster}",
                vcpus_per_node=float(min(cpus)) if cpus else None,
                memory_gib_per_node=round(min(memory) / 1024, 1) if memory else None,
                labels={"cluster": cluster, "partition": partition, "gres_type": gres_type},
            )
        )
    return pools


def members_by_pool(
    nodes: list[dict[str, Any]], cluster: str, partitions: tuple[str, ...] = ()
) -> dict[str, set[str]]:
    """Each pool's node names (the ids ``pools_from_nodes`` gives the same nodes)."""
    groups = _groups(nodes, partitions)
    names = {p for p, _, _ in groups}
    return {
        _pool_id(cluster, partition, _shape(gres_type, gpus), names, groups): {
            str(n.get("name") or "") for n in members
        }
        for (partition, gres_type, gpus), members in groups.items()
    }


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed node list ``gpu[01-03,07],cpu1`` -> gpu01 gpu02 gpu03 gpu07 cpu1 (one bracket per
    name; "" or "(null)" -> none)."""
    names: list[str] = []
    for m in _HOST.finditer(text or ""):
        prefix, ranges, suffix = m.group("prefix"), m.group("ranges"), m.group("suffix") or ""
        if ranges is None:
            if prefix and prefix not in ("(null)", "None"):
                names.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                continue
            for i in range(int(low), int(high or low) + 1):
                names.append(f"{prefix}{i:0{len(low)}d}{suffix}")
    return names


_HOST = re.compile(r"(?P<prefix>[^,\[\]]+)(?:\[(?P<ranges>[^\]]*)\](?P<suffix>[^,\[\]]*))?")


def _groups(
    nodes: list[dict[str, Any]], partitions: tuple[str, ...]
) -> dict[tuple[str, str, int], list[dict]]:
    """Nodes by (partition, GRES type, GPUs per node): one pool each."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for node in nodes:
        gres = parse_gpu_gres(str(node.get("gres") or ""))
        for partition in node.get("partitions") or []:
            if partitions and partition not in partitions:
                continue
            groups[(partition, gres.type, gres.count)].append(node)
    return groups


def _shape(gres_type: str, gpus: int) -> str:
    return f"{gres_type}x{gpus}" if gpus else "cpu"


def _pool_id(cluster: str, partition: str, shape: str, partitions: set[str], groups: dict) -> str:
    """``slurm/<cluster>`` (as fleet files name it) while the cluster is one pool; longer only when
    it has several partitions or node shapes."""
    pool_id = f"slurm/{cluster}"
    if len(partitions) > 1:
        pool_id += f"/{partition}"
    if sum(1 for p, _, _ in groups if p == partition) > 1:
        pool_id += f"/{shape}"
    return pool_id
