"""The ``resources:`` section -> fields of ``models.Resources``.

A SkyPilot ``any_of`` / ``ordered`` list is a set of whole alternatives, each the base section with a
few keys overridden. overcast's Resources holds one list of accelerator alternatives and one allow list
of providers/regions/zones, so it can express alternatives that differ in ONE of: accelerators, where
(infra), or spot. Alternatives that differ in more would lose their pairing (spot A100 *or* on-demand
H100 is not "A100 or H100, spot or not"), which changes placement: that is an error, not a guess.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from overcast.spec import fields as F
from overcast.spec.accelerators import parse_accelerator_field
from overcast.spec.context import Context, kind_of
from overcast.spec.errors import FieldError, shown
from overcast.spec.infra import Location, parse_infra, provider_name, unknown_provider_hint
from overcast.spec.models import AcceleratorRequest, SpotPolicy
from overcast.spec.quantities import parse_cpus, parse_disk, parse_memory, parse_ports
from overcast.spec.yamldoc import Path

LIST_FIELDS = ("providers", "deny_providers", "regions", "deny_regions", "zones")
LEGACY = ("cloud", "region", "zone")  # SkyPilot's older spelling of infra


@dataclass(slots=True)
class Candidate:
    """One alternative: the base section, or the base with an any_of/ordered entry laid over it."""

    values: dict[str, Any] = field(default_factory=dict)  # other Resources fields
    paths: dict[str, Path] = field(default_factory=dict)  # Resources field -> where the user set it
    accelerators: tuple[AcceleratorRequest, ...] = ()
    accelerators_ordered: bool = False
    location: Location = field(default_factory=Location)
    spot: SpotPolicy | None = None


@dataclass(slots=True)
class ResourcesParts:
    resources: dict[str, Any]
    priority: tuple[Any, Path] | None = None
    max_retries_on_failure: tuple[int, Path] | None = None


def build_resources(ctx: Context, raw: Any, num_nodes: int) -> ResourcesParts:
    base_path: Path = ("resources",)
    section = ctx.mapping(raw, base_path, "resources")
    if not section:
        return ResourcesParts({})
    ctx.check_keys(section, base_path, F.RESOURCES)
    parts = ResourcesParts({})
    if "priority" in section:
        parts.priority = (section["priority"], (*base_path, "priority"))
    if "job_recovery" in section:
        where = (*base_path, "job_recovery")
        parts.max_retries_on_failure = _job_recovery(ctx, section["job_recovery"], where)

    base = {k: (v, (*base_path, k)) for k, v in section.items() if k not in F.CANDIDATE_FORBIDDEN}
    lists = [k for k in ("any_of", "ordered") if k in section]
    if len(lists) == 2:
        ctx.error((*base_path, "ordered"), "use either any_of or ordered, not both")
        return parts
    if not lists:
        parts.resources = _to_fields(ctx, [_candidate(ctx, base, num_nodes)], base_path, ordered=False)
        return parts
    key = lists[0]
    list_path = (*base_path, key)
    entries = section[key]
    if not isinstance(entries, list) or not entries:
        ctx.error(list_path, f"{key} must be a non-empty list of resources, got {kind_of(entries)}")
        return parts
    candidates = []
    for index, entry in enumerate(entries):
        entry_path = (*list_path, index)
        entry_map = ctx.mapping(entry, entry_path, f"each {key} entry")
        if entry_map is None:
            continue
        ctx.check_keys(entry_map, entry_path, F.RESOURCES)
        for bad in F.CANDIDATE_FORBIDDEN:
            if bad in entry_map:
                ctx.error((*entry_path, bad), f"set {bad} once, outside {key}")
        merged = dict(base)
        for k, v in entry_map.items():
            if k not in F.CANDIDATE_FORBIDDEN:
                merged[k] = (v, (*entry_path, k))
        candidates.append(_candidate(ctx, merged, num_nodes))
    if len(candidates) == len(entries):
        parts.resources = _to_fields(ctx, candidates, list_path, ordered=key == "ordered")
    return parts


def _candidate(ctx: Context, items: dict[str, tuple[Any, Path]], num_nodes: int) -> Candidate:
    cand = Candidate()

    def put(name: str, value: Any, path: Path) -> None:
        if value is not None:
            cand.values[name] = value
            cand.paths[name] = path

    cpus = None
    if "cpus" in items:
        value, path = items["cpus"]
        cpus = ctx.attempt(path, parse_cpus, value)
        put("cpus", cpus, path)
    for key, (value, path) in items.items():
        if key == "accelerators":
            parsed = ctx.attempt(path, parse_accelerator_field, value)
            if parsed is not None:
                cand.accelerators, cand.accelerators_ordered = parsed
                cand.paths["accelerators"] = path
        elif key == "memory":
            put("memory_gib", ctx.attempt(path, parse_memory, value, cpus), path)
        elif key == "disk_size":
            put("disk_gib", ctx.attempt(path, parse_disk, value), path)
        elif key == "ports":
            put("ports", ctx.attempt(path, parse_ports, value), path)
        elif key == "instance_type":
            put("instance_type", ctx.attempt(path, _string, value), path)
        elif key == "max_hourly_cost":  # SkyPilot's cap is per node; overcast's is the whole job
            price = ctx.attempt(path, _price, value)
            put("max_price_per_hour", None if price is None else price * num_nodes, path)
        elif key == "max_price_per_hour":
            put("max_price_per_hour", ctx.attempt(path, _price, value), path)
        elif key in LIST_FIELDS:
            put(key, ctx.attempt(path, _names, value, key), path)
        elif key == "image_id":
            put("image_regions", _image_regions(ctx, value, path), path)
        elif key == "network_tier":
            _network_tier(ctx, value, path)
    if "max_hourly_cost" in items and "max_price_per_hour" in items:
        ctx.error(items["max_price_per_hour"][1], "use either max_price_per_hour or max_hourly_cost")
    for key in ("providers", "deny_providers"):
        for name in cand.values.get(key, ()):
            _warn_if_unknown(ctx, cand.paths[key], name)
    cand.spot = _spot(ctx, items)
    cand.location = _location(ctx, items)
    return cand


def _to_fields(ctx: Context, cands: list[Candidate], path: Path, *, ordered: bool) -> dict[str, Any]:
    """Merge alternatives into one Resources field dict, or report why they cannot be merged."""
    rows = [_row(ctx, c) for c in cands]
    out: dict[str, Any] = {}
    varying: list[str] = []
    for name in sorted({k for row in rows for k in row}):
        values = [row.get(name) for row in rows]
        if all(v == values[0] for v in values):
            if values[0] not in (None, ()):
                out[name] = values[0]
        elif name in ("accelerators", "providers", "regions", "zones", "spot"):
            varying.append(name)
        else:
            ctx.error(path, f"the alternatives differ in {name}; only accelerators, infra or spot may differ")
            return {}
    dims = {"accelerators" if v == "accelerators" else "spot" if v == "spot" else "infra" for v in varying}
    if len(dims) > 1:
        ctx.error(path, f"the alternatives differ in both {' and '.join(sorted(dims))}; "
                  "overcast can only vary one of them (split the workload or pick one)")  # fmt: skip
        return {}
    if "accelerators" in dims:
        if not all(row["accelerators"] for row in rows):
            ctx.error(path, "some alternatives ask for accelerators and others for none; overcast cannot "
                      "express that (make a CPU-only workload separately)")  # fmt: skip
            return {}
        out["accelerators"] = tuple(dict.fromkeys(a for row in rows for a in row["accelerators"]))
    if "spot" in dims:
        out["spot"] = SpotPolicy.ALLOWED
        if ordered:
            ctx.warn(path, "the order of spot and on-demand is not kept; overcast picks by price and risk")
    if "infra" in dims:
        for name in ("providers", "regions", "zones"):
            values = [row.get(name, ()) for row in rows]
            if any(values) and not all(values):
                ctx.error(path, f"some alternatives restrict {name} and others do not; overcast cannot "
                          "express that (give every alternative the same level of infra)")  # fmt: skip
                return {}
            out[name] = tuple(dict.fromkeys(x for v in values for x in v))
        if unnamed := _unnamed_locations(rows):
            shown = ", ".join(unnamed[:3]) + (f" and {len(unnamed) - 3} more" if len(unnamed) > 3 else "")
            ctx.error(path, f"merged, the alternatives would also allow {shown}, which none of them "
                      "names (overcast keeps one list of providers and one of regions); split the "
                      "workload or choose locations no other listed provider has")  # fmt: skip
            return {}
        if ordered:
            ctx.warn(path, "the order between locations is not kept; overcast picks the cheapest that fits")
    out = {k: v for k, v in out.items() if v not in ((), None)}
    # a varying accelerator follows the list's kind; a shared one keeps its own (a YAML list is ordered)
    out["ordered"] = ordered if "accelerators" in dims else cands[0].accelerators_ordered
    origin = cands[0].paths if len(cands) == 1 else {}
    for name in out:
        ctx.record(("resources", name), origin.get(name, path))
    return out


def _unnamed_locations(rows: list[dict[str, Any]]) -> list[str]:
    """Catalog locations that the merged allow lists admit but no alternative named, as infra strings.

    Providers, regions and zones are separate allow lists, so merging "aws/us-west-2" with
    "lambda/us-east-1" also admits aws/us-east-1 and lambda/us-west-2: both real places. Pairs that the
    catalog does not offer (a Kubernetes context under aws, say) cannot change placement and pass.
    """
    levels = ("providers", "regions", "zones")

    def combos(lists: list[tuple[str, ...]]) -> set[tuple[str | None, ...]]:
        return set(itertools.product(*(values or (None,) for values in lists)))

    named = set().union(*(combos([row.get(n, ()) for n in levels]) for row in rows))
    merged = combos([tuple(dict.fromkeys(x for row in rows for x in row.get(n, ()))) for n in levels])
    extra = merged - named
    if not extra:
        return []
    from overcast.catalog.load import CatalogMissingError, load_offers  # only this rare case needs it

    try:
        offered = {(o.provider, o.region, o.zone) for o in load_offers()}
    except CatalogMissingError:
        return []

    def sold(want: tuple[str | None, ...]) -> bool:
        return any(all(w is None or w == h for w, h in zip(want, have, strict=True)) for have in offered)

    def infra(c: tuple[str | None, ...]) -> str:
        return "/".join(part or "*" for part in c).removesuffix("/*").removesuffix("/*")

    return sorted(infra(c) for c in extra if sold(c))


def _row(ctx: Context, cand: Candidate) -> dict[str, Any]:
    """The Resources fields of one alternative, with infra folded into the allow lists."""
    row = dict(cand.values)
    row["accelerators"] = cand.accelerators
    row["spot"] = cand.spot or SpotPolicy.NEVER
    image_regions = row.pop("image_regions", ())
    loc = cand.location
    for name, value in (("providers", loc.provider), ("regions", loc.region), ("zones", loc.zone)):
        if value is None:
            continue
        if row.get(name):
            ctx.error(cand.paths[name], f"{name} conflicts with infra/cloud/region/zone; use one of them")
        row[name] = (value,)
    if image_regions:
        if row.get("regions"):
            ctx.error(cand.paths["image_regions"], "a per-region image_id conflicts with the region given")
        row["regions"] = image_regions
    return row


def _spot(ctx: Context, items: dict[str, tuple[Any, Path]]) -> SpotPolicy | None:
    policy = None
    if "spot" in items:
        value, path = items["spot"]
        try:
            policy = SpotPolicy(value.lower()) if isinstance(value, str) else None
        except ValueError:
            policy = None
        if policy is None:
            choices = [p.value for p in SpotPolicy]
            ctx.error(path, f"expected never, allowed or required, got {shown(value)}", choices)
            return None
    if "use_spot" in items:
        value, path = items["use_spot"]
        if not isinstance(value, bool):
            ctx.error(path, f"expected true or false, got {shown(value)}")
            return policy
        from_bool = SpotPolicy.REQUIRED if value else SpotPolicy.NEVER
        if policy is not None and policy is not from_bool:
            ctx.error(path, f"use_spot: {str(value).lower()} contradicts spot: {policy.value}")
        policy = policy or from_bool
    return policy


def _location(ctx: Context, items: dict[str, tuple[Any, Path]]) -> Location:
    if "infra" in items:
        value, path = items["infra"]
        for legacy in LEGACY:
            if legacy in items:
                ctx.error(items[legacy][1], f"use either infra or {legacy}, not both")
        loc = ctx.attempt(path, parse_infra, value) or Location()
    elif given := [k for k in LEGACY if k in items]:
        parts = {k: ctx.attempt(items[k][1], _string, items[k][0]) for k in given}
        if None in parts.values():
            return Location()
        # the legacy keys spell the same thing as infra: "aws" + "us-east-1" is "aws/us-east-1"
        text = "/".join([parts.get("cloud", "*"), parts.get("region", "*"), parts.get("zone", "*")])
        path = items[given[0]][1]
        loc = ctx.attempt(path, parse_infra, text.removesuffix("/*").removesuffix("/*")) or Location()
    else:
        return Location()
    if loc.provider is not None and not loc.cluster:
        _warn_if_unknown(ctx, path, loc.provider)
    return loc


def _warn_if_unknown(ctx: Context, path: Path, provider: str) -> None:
    """A warning, not an error: a lab may name its own pools' provider."""
    hint = unknown_provider_hint(provider)
    if hint is not None:
        did = f" (did you mean {', '.join(hint)}?)" if hint else ""
        ctx.warn(path, f"provider '{provider}' is not one overcast knows{did}")


def _job_recovery(ctx: Context, value: Any, path: Path) -> tuple[int, Path] | None:
    if isinstance(value, str) or value is None:
        ctx.warn(path, f"not acted on: strategy {shown(value)}; {F.JOB_RECOVERY['strategy'][1]}")
        return None
    section = ctx.mapping(value, path, "job_recovery")
    if not section:
        return None
    ctx.check_keys(section, path, F.JOB_RECOVERY)
    if "max_restarts_on_errors" not in section:
        return None
    restarts = section["max_restarts_on_errors"]
    where = (*path, "max_restarts_on_errors")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        ctx.error(where, f"must be a whole number >= 0, got {shown(restarts)}")
        return None
    return restarts, where


def _image_regions(ctx: Context, value: Any, path: Path) -> tuple[str, ...] | None:
    if isinstance(value, dict) and value:
        ctx.warn(path, "not acted on: the image itself is not applied; its regions limit where the job runs")
        return tuple(str(k) for k in value)
    ctx.warn(path, "not acted on: overcast does not choose machine images yet")
    return None


def _network_tier(ctx: Context, value: Any, path: Path) -> None:
    if value == "standard":
        ctx.warn(path, "not acted on: 'standard' is what overcast assumes")
    elif value == "best":
        ctx.error(
            path, "not supported: 'best' needs offers tagged with their interconnect; overcast has none"
        )
    else:
        ctx.error(path, f"expected 'standard' or 'best', got {shown(value)}")


def _string(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float) or not str(value).strip():
        raise FieldError(f"expected a non-empty string, got {shown(value)}")
    return str(value).strip()


def _price(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise FieldError(f"expected a positive price in $/hour, got {shown(value)}")
    return float(value)


def _names(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise FieldError(f"{what} must be a name or a list of names, got {shown(value)}")
    names = [x.strip() for x in items]
    if what in ("providers", "deny_providers"):
        names = [provider_name(x) for x in names]
    return tuple(dict.fromkeys(names))
