"""PoolIndex: the pool list as column arrays, grouped by accelerator, built once per snapshot.

Placing one job must take well under a millisecond over tens of thousands of pools, so the pools are
sorted by (accelerator, id) once and every attribute a filter or the score reads becomes a numpy column.
A job then touches only the slices of the accelerators it asks for. What changes while a scheduler
cycle places jobs one by one (nodes taken, quota used) lives in a separate ``Usage`` overlay, so one
index serves a whole cycle (or every ``overcast optimize`` query) without being rebuilt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from overcast.placement.pool import Health, Pool, Purchase
from overcast.scheduler.snapshot import Quota

PURCHASE_CODES = {Purchase.RESERVED: 0, Purchase.ON_DEMAND: 1, Purchase.SPOT: 2}
HEALTH_CODES = {Health.OK: 0, Health.OUT_OF_CAPACITY: 1, Health.DOWN: 2}
UNLIMITED = np.inf  # free nodes of a pool without a known limit


class Vocabulary:
    """Strings <-> small integer codes, so set membership becomes a table lookup over a code column."""

    def __init__(self, values: Iterable[str]) -> None:
        self.names: list[str] = sorted(set(values))
        self.code = {name: i for i, name in enumerate(self.names)}

    def table(self, names: Iterable[str]) -> np.ndarray:
        """Boolean lookup table: ``table[codes]`` is True where the code's name is in ``names``."""
        table = np.zeros(len(self.names) + 1, dtype=bool)  # last slot: code -1 (missing value)
        for name in names:
            i = self.code.get(name)
            if i is not None:
                table[i] = True
        return table


@dataclass(slots=True)
class Usage:
    """Nodes and quota GPUs taken on top of the index's starting state (by earlier placements)."""

    nodes: np.ndarray  # per pool position
    quota_gpus: np.ndarray  # per quota

    def take(self, index: PoolIndex, position: int, nodes: int) -> None:
        self.nodes[position] += nodes
        gpus = nodes * index.gpus[position]
        for q in index.quota_of[position]:
            if q >= 0:
                self.quota_gpus[q] += gpus


@dataclass(eq=False)
class PoolIndex:
    pools: list[Pool]  # sorted by (accelerator, id); a position is an index into this list
    groups: dict[str, tuple[int, int]]  # lower-cased accelerator -> [start, stop) positions
    accelerator_names: dict[str, str]  # lower-cased -> catalog spelling
    providers: Vocabulary
    regions: Vocabulary
    zones: Vocabulary
    instance_types: Vocabulary
    provider: np.ndarray
    region: np.ndarray
    zone: np.ndarray  # -1 when the pool has no zone
    instance_type: np.ndarray
    gpus: np.ndarray
    purchase: np.ndarray
    price: np.ndarray  # list $/node-hour
    marginal: np.ndarray  # $/node-hour we pay for one more node now (0 for reserved)
    free: np.ndarray  # free nodes at build time (negative when over capacity); UNLIMITED when unknown
    health: np.ndarray
    unhealthy_until: np.ndarray  # inf when unknown
    preemptions_per_hour: np.ndarray
    vcpus: np.ndarray  # nan when unknown
    memory_gib: np.ndarray
    quota_of: np.ndarray  # (P, 2): provider-wide quota, provider+region quota; -1 = none
    quota_left: np.ndarray  # GPUs left per quota at build time
    quotas: list[Quota]
    disabled_providers: frozenset[str]
    position_of: dict[str, int] = field(default_factory=dict)
    filter_cache: dict[tuple, tuple] = field(default_factory=dict, repr=False)  # see filters.run_filters

    @classmethod
    def build(
        cls,
        pools: Iterable[Pool],
        *,
        quotas: Iterable[Quota] = (),
        disabled_providers: Iterable[str] = (),
        used_nodes: Mapping[str, int] | None = None,
        providers: Iterable[str] = (),
    ) -> PoolIndex:
        """Index ``pools``. ``used_nodes`` (pool id -> nodes) overrides ``Pool.used_nodes`` without
        mutating the pools, so a pure scheduler step can account for running jobs. ``providers``: more
        provider names to explain exclusions for (when ``pools`` is a subset of the catalog)."""
        pools = list(pools)
        layout = _layout(pools, tuple(sorted(set(providers))))
        pools = [pools[i] for i in layout.order]
        used = [p.used_nodes if used_nodes is None else used_nodes.get(p.id, p.used_nodes) for p in pools]
        n = len(pools)

        def column(values: Iterable, dtype) -> np.ndarray:
            return np.fromiter(values, dtype=dtype, count=n)

        free = column(
            (
                UNLIMITED if p.capacity_nodes is None else p.capacity_nodes - u
                for p, u in zip(pools, used, strict=True)
            ),
            np.float64,
        )
        price = column((p.price_per_node_hour for p in pools), np.float64)
        quota_list, quota_of, quota_left = _quota_columns(layout, used, list(quotas))
        return cls(
            pools=pools,
            groups=layout.groups,
            accelerator_names=layout.accelerator_names,
            providers=layout.providers,
            regions=layout.regions,
            zones=layout.zones,
            instance_types=layout.instance_types,
            provider=layout.provider,
            region=layout.region,
            zone=layout.zone,
            instance_type=layout.instance_type,
            gpus=layout.gpus,
            purchase=layout.purchase,
            price=price,
            marginal=np.where(layout.purchase == PURCHASE_CODES[Purchase.RESERVED], 0.0, price),
            free=free,
            health=column((HEALTH_CODES[p.health] for p in pools), np.int8),
            unhealthy_until=column(
                (np.inf if p.unhealthy_until is None else p.unhealthy_until for p in pools), np.float64
            ),
            preemptions_per_hour=column((p.preemptions_per_hour for p in pools), np.float64),
            vcpus=layout.vcpus,
            memory_gib=layout.memory_gib,
            quota_of=quota_of,
            quota_left=quota_left,
            quotas=quota_list,
            disabled_providers=frozenset(disabled_providers),
            position_of=layout.position_of,
        )

    def __len__(self) -> int:
        return len(self.pools)

    def new_usage(self) -> Usage:
        return Usage(nodes=np.zeros(len(self.pools)), quota_gpus=np.zeros(len(self.quotas)))

    def positions(self, accelerator: str) -> tuple[int, int]:
        """[start, stop) of the pools offering ``accelerator`` (case-insensitive); empty when none."""
        return self.groups.get(accelerator.lower(), (0, 0))

    def usable(self, positions: np.ndarray, now: float) -> np.ndarray:
        """Vectorised ``Pool.usable(now)``."""
        health = self.health[positions]
        return (health == 0) | ((health == 1) & (self.unhealthy_until[positions] <= now))

    def free_nodes(self, positions: np.ndarray, usage: Usage | None) -> np.ndarray:
        free = self.free[positions]
        return free if usage is None else free - usage.nodes[positions]

    def quota_gpus_left(self, positions: np.ndarray, usage: Usage | None) -> np.ndarray:
        """GPUs the tightest quota covering each pool still allows (inf where no quota applies)."""
        left = np.append(self.quota_left, np.inf)  # slot -1: no quota
        if usage is not None:
            left[:-1] -= usage.quota_gpus
        of = self.quota_of[positions]
        return np.minimum(left[of[:, 0]], left[of[:, 1]])


@dataclass(eq=False)
class _Layout:
    """What an index takes from a pool's identity (not its state): the sort order, the groups and
    the static columns. Rebuilding it is most of an index build, and a scheduler calls build() every
    cycle on the same pools, so the last few layouts are kept (keyed by those static fields)."""

    order: list[int]  # input position -> sorted position
    groups: dict[str, tuple[int, int]]
    accelerator_names: dict[str, str]
    providers: Vocabulary
    regions: Vocabulary
    zones: Vocabulary
    instance_types: Vocabulary
    provider: np.ndarray
    region: np.ndarray
    zone: np.ndarray
    instance_type: np.ndarray
    gpus: np.ndarray
    purchase: np.ndarray
    vcpus: np.ndarray
    memory_gib: np.ndarray
    position_of: dict[str, int]


_LAYOUTS: dict[tuple, _Layout] = {}
_KEEP_LAYOUTS = 4
_LAYOUTS_LOCK = threading.Lock()


def _static(p: Pool) -> tuple:
    return (
        p.id,
        p.provider,
        p.region,
        p.zone,
        p.instance_type,
        p.accelerator,
        p.gpus_per_node,
        p.purchase,
        p.vcpus_per_node,
        p.memory_gib_per_node,
    )


def _layout(pools: list[Pool], extra_providers: tuple[str, ...]) -> _Layout:
    key = (tuple(map(_static, pools)), extra_providers)
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = _build_layout(pools, extra_providers)
        with _LAYOUTS_LOCK:  # the API server and the control loop may build indexes in threads
            while len(_LAYOUTS) >= _KEEP_LAYOUTS:
                del _LAYOUTS[next(iter(_LAYOUTS))]  # oldest first
            _LAYOUTS[key] = layout
    return layout


def _build_layout(pools: list[Pool], extra_providers: tuple[str, ...]) -> _Layout:
    order = sorted(range(len(pools)), key=lambda i: (pools[i].accelerator.lower(), pools[i].id))
    pools = [pools[i] for i in order]
    groups: dict[str, tuple[int, int]] = {}
    for i, p in enumerate(pools):
        name = p.accelerator.lower()
        start, _ = groups.get(name, (i, i))
        groups[name] = (start, i + 1)
    providers = Vocabulary([*(p.provider for p in pools), *extra_providers])
    regions = Vocabulary(p.region for p in pools)
    zones = Vocabulary(p.zone for p in pools if p.zone is not None)
    instance_types = Vocabulary(p.instance_type for p in pools)
    n = len(pools)

    def column(values: Iterable, dtype) -> np.ndarray:
        return np.fromiter(values, dtype=dtype, count=n)

    def opt(value: float | None) -> float:
        return np.nan if value is None else value

    return _Layout(
        order=order,
        groups=groups,
        accelerator_names={p.accelerator.lower(): p.accelerator for p in pools},
        providers=providers,
        regions=regions,
        zones=zones,
        instance_types=instance_types,
        provider=column((providers.code[p.provider] for p in pools), np.int32),
        region=column((regions.code[p.region] for p in pools), np.int32),
        zone=column((-1 if p.zone is None else zones.code[p.zone] for p in pools), np.int32),
        instance_type=column((instance_types.code[p.instance_type] for p in pools), np.int32),
        gpus=column((p.gpus_per_node for p in pools), np.int64),
        purchase=column((PURCHASE_CODES[p.purchase] for p in pools), np.int8),
        vcpus=column((opt(p.vcpus_per_node) for p in pools), np.float64),
        memory_gib=column((opt(p.memory_gib_per_node) for p in pools), np.float64),
        position_of={p.id: i for i, p in enumerate(pools)},
    )


def _quota_columns(layout: _Layout, used: list[int], quotas: list[Quota]):
    """Map each pool to the provider-wide and provider+region quota covering it (the tightest when a
    key repeats) and count the GPUs already in use under each quota."""
    by_key: dict[tuple[str, str | None], int] = {}
    kept: list[Quota] = []
    for q in quotas:
        key = (q.provider, q.region)
        if key in by_key:
            if q.max_gpus < kept[by_key[key]].max_gpus:
                kept[by_key[key]] = q
        else:
            by_key[key] = len(kept)
            kept.append(q)
    n = len(layout.provider)
    quota_of = np.full((n, 2), -1, dtype=np.int64)
    n_regions = len(layout.regions.names)
    wide = np.full(len(layout.providers.names), -1, dtype=np.int64)
    regional = np.full(len(layout.providers.names) * n_regions, -1, dtype=np.int64)
    for (provider, region), q in by_key.items():
        pc = layout.providers.code.get(provider)
        if pc is None:
            continue
        if region is None:
            wide[pc] = q
        elif region in layout.regions.code:
            regional[pc * n_regions + layout.regions.code[region]] = q
    if kept:
        quota_of[:, 0] = wide[layout.provider]
        quota_of[:, 1] = regional[layout.provider.astype(np.int64) * n_regions + layout.region]
    gpus_used = np.asarray(used, dtype=np.float64) * layout.gpus
    in_use = np.zeros(len(kept))
    for slot in (0, 1):
        covered = quota_of[:, slot] >= 0
        in_use += np.bincount(quota_of[covered, slot], weights=gpus_used[covered], minlength=len(kept))
    left = np.array([q.max_gpus for q in kept], dtype=np.float64) - in_use
    return kept, quota_of, left
