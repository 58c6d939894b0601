"""JobSpec / ServiceSpec -> overcast YAML that ``load_spec_text`` reads back to an equal model.

Used to show a stored spec (``overcast jobs show``), to save an imported SkyPilot file in overcast's
own form, and by the round-trip property test. Only fields that differ from the defaults are written.
"""

from __future__ import annotations

from typing import Any

import yaml

from overcast.spec.models import JobSpec, Resources, ServiceSpec

# Resources field -> key in the YAML (SkyPilot's name where it has one)
_RESOURCE_KEYS = {"memory_gib": "memory", "disk_gib": "disk_size"}


def dump_spec(spec: JobSpec | ServiceSpec) -> str:
    return yaml.safe_dump(spec_to_data(spec), sort_keys=False, allow_unicode=True, width=100)


def spec_to_data(spec: JobSpec | ServiceSpec) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": "service" if isinstance(spec, ServiceSpec) else "job", "name": spec.name}
    plain = spec.model_dump(mode="json", exclude_defaults=True)
    plain.pop("name")
    if "resources" in plain:
        data["resources"] = _resources(spec.resources)
    if isinstance(spec, ServiceSpec):
        data["service"] = _service(spec, plain)
        for key in ("replicas", "readiness_probe", "proxy", "port", "max_share_per_provider", "spot_hedge"):
            plain.pop(key, None)
    plain.pop("resources", None)
    data.update(plain)
    return data


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    accelerators = [str(a) for a in resources.accelerators]
    if len(accelerators) == 1:
        out["accelerators"] = accelerators[0]
    elif resources.ordered:
        out["accelerators"] = accelerators  # a list is ordered
    elif accelerators:
        out["accelerators"] = dict.fromkeys(accelerators)  # {"A100:8", "H100:8"}: a set
    plain = resources.model_dump(mode="json", exclude_defaults=True, exclude={"accelerators", "ordered"})
    for name, value in plain.items():
        out[_RESOURCE_KEYS.get(name, name)] = value
    return out


def _service(spec: ServiceSpec, plain: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "readiness_probe" in plain:
        out["readiness_probe"] = plain["readiness_probe"]
    scaling = spec.replicas.model_dump(mode="json", exclude_defaults=True)
    policy = {"target_qps_per_replica" if k == "target_rps_per_replica" else k: v for k, v in scaling.items()}
    if spec.spot_hedge is not None:
        policy["base_ondemand_fallback_replicas"] = spec.spot_hedge.base_on_demand
        policy["dynamic_ondemand_fallback"] = spec.spot_hedge.dynamic_fallback
    if policy:
        out["replica_policy"] = policy
    for key in ("proxy", "port", "max_share_per_provider"):
        if key in plain:
            out[key] = plain[key]
    return out
