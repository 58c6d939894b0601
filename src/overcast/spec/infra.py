"""Where a workload may run: SkyPilot's ``infra`` strings and ``cloud``/``region``/``zone``.

``infra`` is ``cloud[/region[/zone]]`` with ``*`` as a wildcard, ``k8s[/context]`` (a context may
contain slashes) or ``slurm/cluster``. A Kubernetes context is the region of provider ``kubernetes``.
A Slurm cluster's pools carry the cluster's name as their provider (``catalog.pools.cluster_pool``), so
``slurm/oci-hpc`` means provider ``oci-hpc``; "any Slurm cluster" and partitions have no equivalent
in ``Resources`` and are rejected rather than guessed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from overcast.spec.errors import FieldError, shown

# Provider names overcast knows (SkyPilot's clouds plus on-prem kinds). An unknown name is a warning,
# not an error: a lab may name its own pools.
KNOWN_PROVIDERS = (
    "aws", "azure", "gcp", "oci", "lambda", "nebius", "runpod", "vast", "fluidstack", "cudo",
    "paperspace", "ibm", "digitalocean", "scp", "vsphere", "hyperbolic", "hyperstack", "jarvislabs",
    "lium", "mithril", "verda", "seeweb", "shadeform", "yotta", "primeintellect", "coreweave", "crusoe",
    "together", "ovhcloud", "scaleway", "kubernetes", "ssh", "local", "twin",
)  # fmt: skip
_ALIASES = {"k8s": "kubernetes", "datacrunch": "verda", "do": "digitalocean", "oracle": "oci"}


@dataclass(frozen=True, slots=True)
class Location:
    provider: str | None = None
    region: str | None = None
    zone: str | None = None
    cluster: bool = False  # the provider is a private cluster's name, not a provider overcast knows


def provider_name(raw: str) -> str:
    name = raw.strip().lower()
    return _ALIASES.get(name, name)


def unknown_provider_hint(name: str) -> tuple[str, ...] | None:
    """None when ``name`` is a known provider; else the closest known names (maybe none)."""
    if name in KNOWN_PROVIDERS:
        return None
    return tuple(difflib.get_close_matches(name, KNOWN_PROVIDERS, n=3, cutoff=0.6))


def parse_infra(text: str) -> Location:
    """``aws/us-east-1/us-east-1a`` -> Location("aws", "us-east-1", "us-east-1a")."""
    if not isinstance(text, str) or not text.strip():
        raise FieldError(f"expected a string like 'aws/us-east-1' or 'k8s/my-context', got {shown(text)}")
    head, _, rest = text.strip().partition("/")
    provider = provider_name(head)
    if provider == "kubernetes":  # the context is everything after the first slash
        return Location("kubernetes", _wild(rest) if rest else None, None)
    if provider == "slurm":
        cluster, _, partition = rest.partition("/")
        if not _wild(cluster) or partition:
            raise FieldError(
                f"use 'slurm/<cluster>' (the cluster's name in the fleet file), got {shown(text)}"
            )
        return Location(cluster.strip(), None, None, cluster=True)
    parts = rest.split("/") if rest else []
    if len(parts) > 2 or any(not p.strip() for p in parts):
        raise FieldError(f"expected 'cloud[/region[/zone]]', got {shown(text)}")
    region = _wild(parts[0]) if parts else None
    zone = _wild(parts[1]) if len(parts) > 1 else None
    return Location(_wild(provider), region, zone)


def _wild(part: str) -> str | None:
    part = part.strip()
    return None if part in ("*", "") else part
