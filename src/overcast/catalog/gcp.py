"""GCP rows: join each GPU price row to the VM that carries it.

In SkyPilot's GCP catalog a GPU row has an empty InstanceType and prices only the GPUs; the host VM is a
separate row (A2/A3/A4/G2 VMs come with their GPUs built in, N1 VMs take attachable T4/V100/P100/P4).
An offer is a whole machine, so we pair every GPU row with the smallest host VM in the same zone that
takes that many GPUs and add the two prices (on-demand and spot alike), as SkyPilot does when it prices
a launch. An N1 offer is named "<vm>+<count>x<gpu>" ("n1-highmem-8+1xT4").
TPU rows are priced whole (a TPU VM includes its host) and use the TPU name as instance type.
"""

from __future__ import annotations

from collections.abc import Iterable

from overcast.catalog.accelerators import accelerator_kind, canonical_name
from overcast.catalog.normalise import Finding, normalise_row
from overcast.catalog.offer import Offer

# smallest G2 VM for 1, 2, 4 or 8 L4s
_G2 = {1: "g2-standard-4", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"}
_N1_GPUS = {"T4", "V100", "P100", "P4"}


def host_candidates(accelerator: str, count: int) -> list[str]:
    """Instance types that carry ``count`` x ``accelerator``, preferred first."""
    if accelerator == "A100":
        return [f"a2-highgpu-{count}g"] if count <= 8 else [f"a2-megagpu-{count}g"]
    if accelerator == "A100-80GB":
        return [f"a2-ultragpu-{count}g"]
    if accelerator == "H100":
        return [f"a3-highgpu-{count}g", f"a3-edgegpu-{count}g"]
    if accelerator == "H100-MEGA":
        return [f"a3-megagpu-{count}g"]
    if accelerator == "H200":
        return [f"a3-ultragpu-{count}g"]
    if accelerator == "B200":
        return [f"a4-highgpu-{count}g"]
    if accelerator == "L4":
        return [_G2[count]] if count in _G2 else []
    if accelerator in _N1_GPUS:
        # 8 vCPUs per GPU (SkyPilot's default host size), at most the 64-vCPU N1 shape
        return [f"n1-highmem-{min(8 * count, 64)}"]
    return []


def _add(a: str, b: str) -> str:
    if not a.strip() or not b.strip():
        return ""
    return repr(round(float(a) + float(b), 6))


def gcp_offers(
    file_name: str, rows: Iterable[tuple[int, dict[str, str]]]
) -> tuple[list[tuple[Offer, str]], list[Finding]]:
    """((offer, file:line) pairs, findings) for the rows of GCP's vms.csv."""
    hosts: dict[tuple[str, str], dict[str, str]] = {}
    accelerator_rows: list[tuple[int, dict[str, str]]] = []
    for line, row in rows:
        if row.get("AcceleratorName", "").strip():
            accelerator_rows.append((line, row))
        elif row.get("InstanceType", "").strip():
            hosts[(row.get("AvailabilityZone", ""), row["InstanceType"].strip())] = row

    offers: list[tuple[Offer, str]] = []
    findings: list[Finding] = []
    for line, row in accelerator_rows:
        source = f"{file_name}:{line}"
        raw = row["AcceleratorName"].strip()
        name = canonical_name(raw) or raw
        if accelerator_kind(name) == "tpu" or row.get("InstanceType", "").strip():
            offer, found = normalise_row(
                "gcp", source, row, instance_type=row["InstanceType"].strip() or name
            )
        else:
            count = int(float(row.get("AcceleratorCount") or 0))
            zone = row.get("AvailabilityZone", "")
            host_type = next((h for h in host_candidates(name, count) if (zone, h) in hosts), None)
            if host_type is None:
                findings.append(
                    Finding(
                        "gcp", source, "", row.get("Region", ""), "no-host-vm",
                        f"no host VM for {count} x {raw} in {zone}", "excluded",
                    )
                )  # fmt: skip
                continue
            host = hosts[(zone, host_type)]
            merged = {
                **row,
                "vCPUs": host.get("vCPUs", ""),
                "MemoryGiB": host.get("MemoryGiB", ""),
                "Price": _add(row.get("Price", ""), host.get("Price", "")),
                "SpotPrice": _add(row.get("SpotPrice", ""), host.get("SpotPrice", "")),
            }
            # an N1 VM takes several GPU models: name the GPUs so that the instance type stays unique
            itype = f"{host_type}+{count}x{name}" if name in _N1_GPUS else host_type
            offer, found = normalise_row("gcp", source, merged, instance_type=itype)
        findings.extend(found)
        if offer is not None:
            offers.append((offer, source))
    return offers, findings
