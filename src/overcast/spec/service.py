"""The ``service:`` section -> the service-only fields of ``models.ServiceSpec``.

SkyServe's names are kept: ``readiness_probe`` (a path or a mapping), ``replicas`` (a fixed count) or
``replica_policy`` (autoscaling, plus the on-demand fallback that makes spot replicas safe: overcast's
``spot_hedge``), ``ports``. overcast adds ``port`` (same as ``ports``), ``max_share_per_provider`` and
``proxy`` (the load balancer's timeouts).
"""

from __future__ import annotations

from typing import Any

from overcast.spec import fields as F
from overcast.spec.context import Context, kind_of
from overcast.spec.errors import shown
from overcast.spec.yamldoc import Path

SERVICE: Path = ("service",)
PROBE_KEYS = (
    "path", "initial_delay_seconds", "timeout_seconds", "period_seconds", "failure_threshold",
    "timeout_to_ready_seconds",
)  # fmt: skip


def build_service(ctx: Context, raw: Any, resource_ports: tuple[int, ...]) -> dict[str, Any]:
    section = ctx.mapping(raw, SERVICE, "service")
    if section is None:
        return {}
    ctx.check_keys(section, SERVICE, F.SERVICE)
    out: dict[str, Any] = {}
    if "readiness_probe" in section:
        probe = _probe(ctx, section["readiness_probe"], (*SERVICE, "readiness_probe"))
        if probe is not None:
            out["readiness_probe"] = probe
    if "replicas" in section and "replica_policy" in section:
        ctx.error((*SERVICE, "replicas"), "use either replicas (a fixed count) or replica_policy")
    elif "replicas" in section:
        count = section["replicas"]
        ctx.record(("replicas",), (*SERVICE, "replicas"))
        out["replicas"] = {"min_replicas": count, "max_replicas": count}
    elif "replica_policy" in section:
        out.update(_policy(ctx, section["replica_policy"], (*SERVICE, "replica_policy")))
    port = _port(ctx, section, resource_ports)
    if port is not None:
        out["port"] = port
    if "max_share_per_provider" in section:
        out["max_share_per_provider"] = section["max_share_per_provider"]
        ctx.record(("max_share_per_provider",), (*SERVICE, "max_share_per_provider"))
    if "proxy" in section:
        proxy = _proxy(ctx, section["proxy"], (*SERVICE, "proxy"))
        if proxy is not None:
            out["proxy"] = proxy
    return out


def _probe(ctx: Context, value: Any, path: Path) -> dict[str, Any] | None:
    if isinstance(value, str):
        ctx.record(("readiness_probe", "path"), path)
        return {"path": value}
    section = ctx.mapping(value, path, "readiness_probe")
    if section is None:
        return None
    ctx.check_keys(section, path, F.READINESS_PROBE)
    if "period_seconds" in section and "endpoint_probe_interval_seconds" in section:
        ctx.error((*path, "endpoint_probe_interval_seconds"), "use either period_seconds or this, not both")
    probe: dict[str, Any] = {}
    _copy(ctx, section, probe, "readiness_probe", path, PROBE_KEYS)
    if "endpoint_probe_interval_seconds" in section and "period_seconds" not in section:
        probe["period_seconds"] = section["endpoint_probe_interval_seconds"]
        ctx.record(("readiness_probe", "period_seconds"), (*path, "endpoint_probe_interval_seconds"))
    return probe


def _proxy(ctx: Context, value: Any, path: Path) -> dict[str, Any] | None:
    section = ctx.mapping(value, path, "proxy")
    if section is None:
        return None
    ctx.check_keys(section, path, F.PROXY)
    proxy: dict[str, Any] = {}
    _copy(ctx, section, proxy, "proxy", path, tuple(F.PROXY))
    return proxy


def _copy(
    ctx: Context, section: dict[str, Any], out: dict[str, Any], field: str, path: Path, keys: tuple[str, ...]
) -> None:
    """Keys named alike in the YAML and the model, each recorded so pydantic's errors name its line."""
    for key in keys:
        if key in section:
            out[key] = section[key]
            ctx.record((field, key), (*path, key))


def _policy(ctx: Context, value: Any, path: Path) -> dict[str, Any]:
    section = ctx.mapping(value, path, "replica_policy")
    if section is None:
        return {}
    ctx.check_keys(section, path, F.REPLICA_POLICY)
    scaling: dict[str, Any] = {}
    renames = {
        "min_replicas": "min_replicas",
        "max_replicas": "max_replicas",
        "target_qps_per_replica": "target_rps_per_replica",
        "upscale_delay_seconds": "upscale_delay_seconds",
        "downscale_delay_seconds": "downscale_delay_seconds",
    }
    for key, name in renames.items():
        if key in section and section[key] is not None:
            scaling[name] = section[key]
            ctx.record(("replicas", name), (*path, key))
    target = scaling.get("target_rps_per_replica")
    if isinstance(target, dict):  # per-accelerator targets: keep the most conservative one
        where = (*path, "target_qps_per_replica")
        numbers = [v for v in target.values() if isinstance(v, int | float) and not isinstance(v, bool)]
        if not numbers or len(numbers) != len(target):
            ctx.error(where, "per-accelerator targets must map each accelerator to a number")
            scaling.pop("target_rps_per_replica")
        else:
            scaling["target_rps_per_replica"] = min(numbers)
            ctx.warn(where, f"per-accelerator targets are not supported; using the lowest ({min(numbers)})")
    low, high = scaling.get("min_replicas"), scaling.get("max_replicas")
    if _is_int(low) and _is_int(high) and high < low:
        ctx.error((*path, "max_replicas"), f"max_replicas ({high}) is below min_replicas ({low})")
    out: dict[str, Any] = {"replicas": scaling}
    hedge = _hedge(ctx, section, path)
    if hedge is not None:
        out["spot_hedge"] = hedge
    return out


def _hedge(ctx: Context, section: dict[str, Any], path: Path) -> dict[str, Any] | None:
    keys = ("base_ondemand_fallback_replicas", "dynamic_ondemand_fallback", "spot_placer")
    if not any(k in section for k in keys):
        return None
    hedge: dict[str, Any] = {"dynamic_fallback": False}
    if "base_ondemand_fallback_replicas" in section:
        hedge["base_on_demand"] = section["base_ondemand_fallback_replicas"]
        ctx.record(("spot_hedge", "base_on_demand"), (*path, "base_ondemand_fallback_replicas"))
    if "dynamic_ondemand_fallback" in section:
        hedge["dynamic_fallback"] = section["dynamic_ondemand_fallback"]
        ctx.record(("spot_hedge", "dynamic_fallback"), (*path, "dynamic_ondemand_fallback"))
    placer = section.get("spot_placer")
    if "spot_placer" in section and placer != "dynamic_fallback":
        ctx.error((*path, "spot_placer"), f"the only spot placer is dynamic_fallback, got {shown(placer)}")
    return hedge


def _port(ctx: Context, section: dict[str, Any], resource_ports: tuple[int, ...]) -> Any:
    given = [k for k in ("port", "ports") if k in section]
    if len(given) == 2:
        ctx.error((*SERVICE, "ports"), "use either port or ports, not both")
        return None
    if given:
        value = section[given[0]]
        if isinstance(value, list):
            ctx.error((*SERVICE, given[0]), f"a service listens on one port, got {kind_of(value)}")
            return None
        ctx.record(("port",), (*SERVICE, given[0]))
        return value
    if resource_ports:  # SkyServe's default: the replica's first opened port
        ctx.record(("port",), ("resources", "ports"))
        return resource_ports[0]
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
