"""A parsed YAML document -> the keyword arguments of JobSpec or ServiceSpec.

One format serves both: overcast's own keys (docs/spec.md) and SkyPilot's task YAML, so a SkyPilot
file loads unchanged and overcast's extensions (``spot: allowed``, ``providers``, ``checkpoint_dir``,
``team`` ...) sit beside SkyPilot's keys. ``kind: job|service`` is optional: a ``service:`` section
makes a service.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import yaml

from overcast.spec import fields as F
from overcast.spec.context import Context, kind_of
from overcast.spec.errors import shown
from overcast.spec.models import ENV_NAME, JobSpec, ServiceSpec
from overcast.spec.resources import build_resources
from overcast.spec.service import build_service

KINDS = ("job", "service")


def translate(ctx: Context, source: str) -> tuple[type[JobSpec] | type[ServiceSpec], dict[str, Any] | None]:
    """The model to build and its fields; None when the document is not a spec at all."""
    for path, line in ctx.doc.duplicates:
        ctx.error(path, f"given twice (first on line {ctx.doc.lines.get(path)}, again on line {line})")
    data = ctx.doc.data
    if data is None:
        ctx.error((), "the file is empty; a spec needs at least a run command")
        return JobSpec, None
    top = ctx.mapping(data, (), "a spec")
    if top is None:
        return JobSpec, None
    ctx.check_keys(top, (), F.TOP)
    model = _kind(ctx, top)
    out: dict[str, Any] = {}

    def take(key: str, name: str | None = None) -> None:
        if key in top:
            out[name or key] = top[key]
            ctx.record((name or key,), (key,))

    if "name" in top:
        take("name")
    elif not source.startswith("<"):
        out["name"] = PurePath(source).stem
    else:
        ctx.error(("name",), "missing field")
    for key in ("setup", "run", "team", "priority"):
        take(key)
    env = _env(ctx, top)
    if env is not None:
        out["env"] = env

    num_nodes = top.get("num_nodes", 1)
    nodes = (
        num_nodes if isinstance(num_nodes, int) and not isinstance(num_nodes, bool) and num_nodes > 0 else 1
    )
    parts = build_resources(ctx, top.get("resources"), nodes)
    if parts.resources:
        out["resources"] = parts.resources
    if parts.priority is not None:
        value, path = parts.priority
        if "priority" in top and top["priority"] != value:
            ctx.error(path, f"contradicts priority: {top['priority']} given at the top level")
        out["priority"] = value
        ctx.record(("priority",), path)

    if model is ServiceSpec:
        _service_only(ctx, top, num_nodes)
        out.update(build_service(ctx, top.get("service"), parts.resources.get("ports", ())))
        return model, out

    take("num_nodes")
    for key in F.JOB_ONLY:
        take(key)
    if "workdir" in top:
        if isinstance(top["workdir"], dict):
            ctx.warn(("workdir",), "not acted on: git workdirs are not fetched; clone it in setup")
        else:
            take("workdir")
    if parts.max_retries_on_failure is not None:
        value, path = parts.max_retries_on_failure
        if "max_retries_on_failure" in top:
            ctx.error(path, "contradicts max_retries_on_failure at the top level; use one")
        out["max_retries_on_failure"] = value
        ctx.record(("max_retries_on_failure",), path)
    return model, out


def _kind(ctx: Context, top: dict[str, Any]) -> type[JobSpec] | type[ServiceSpec]:
    kind = top.get("kind")
    if kind is None:
        return ServiceSpec if "service" in top else JobSpec
    if kind not in KINDS:
        ctx.error(
            ("kind",),
            f"expected job or service, got {shown(kind)}",
            [k for k in KINDS if isinstance(kind, str) and k[0] == kind[:1]],
        )
        return ServiceSpec if "service" in top else JobSpec
    if kind == "job" and "service" in top:
        ctx.error(("service",), "a job cannot have a service section; use kind: service")
    return ServiceSpec if kind == "service" else JobSpec


def _service_only(ctx: Context, top: dict[str, Any], num_nodes: Any) -> None:
    for key in F.JOB_ONLY:
        if key in top:
            ctx.error((key,), "applies to jobs only, not services")
    if num_nodes != 1:
        ctx.error(("num_nodes",), "multi-node replicas are not supported; each replica is one node")
    if "workdir" in top:
        ctx.warn(("workdir",), "not acted on: services do not sync a workdir yet; fetch code in setup")


def _env(ctx: Context, top: dict[str, Any]) -> dict[str, str] | None:
    """Names and values as the file spells them, not as YAML 1.1 types them: its resolver reads the
    keys NO/ON/Yes as booleans (``ON`` and ``Yes`` would both become "True", one silently lost) and the
    values 0755, 1.10 and 12:30 as 493, 1.1 and 750. A quoted scalar gives its quoted text."""
    keys = [k for k in ("env", "envs") if k in top]
    if not keys:
        return dict(ctx.env) if ctx.env else None
    if len(keys) == 2:
        ctx.error(("envs",), "use either env or envs, not both")
    key = keys[0]
    section = ctx.mapping(top[key], (key,), key)
    if section is None:
        return None
    node = ctx.doc.nodes.get((key,))
    pairs = _as_written(node) if isinstance(node, yaml.MappingNode) else section.items()
    env: dict[str, str] = {}
    for name, value in pairs:
        where = (key, name)
        if not ENV_NAME.fullmatch(name):
            ctx.error(
                where, "not a valid environment variable name (letters, digits and _; no leading digit)"
            )
        elif name in ctx.env:  # given at launch: wins over the file (SkyPilot's --env too)
            continue
        elif value is None:
            ctx.warn(where, f"has no value and is left unset (give it with `overcast launch --env {name}=`)")
        elif isinstance(value, dict | list):
            ctx.error(where, f"an environment variable must be a string or a number, got {kind_of(value)}")
        else:
            env[name] = str(value)
    env.update(ctx.env)
    ctx.record(("env",), (key,))
    return env


_NULL = "tag:yaml.org,2002:null"


def _as_written(node: yaml.MappingNode) -> list[tuple[str, Any]]:
    """(key, value) pairs of a mapping node: scalars as their text, None for null, and a list or a
    mapping (empty: only their kind is reported) for the rest. Merge keys are already flattened in."""
    pairs: list[tuple[str, Any]] = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):  # PyYAML refuses these before we get here
            continue
        value: Any
        if value_node.tag == _NULL:
            value = None
        elif isinstance(value_node, yaml.ScalarNode):
            value = value_node.value
        else:
            value = {} if isinstance(value_node, yaml.MappingNode) else []
        pairs.append((key_node.value, value))
    return pairs
