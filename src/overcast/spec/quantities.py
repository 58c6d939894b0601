"""Sizes and counts in SkyPilot's notation: ``cpus: 4+``, ``memory: 32+`` / ``64GB`` / ``4x``,
``disk_size: 256`` / ``1TB``, ``ports: [8080, 10022-10040]``.

overcast treats every size as a minimum per node: an offer with more is acceptable. SkyPilot reads a
bare number as "exactly"; for placement "at least" only ever widens the choice, so we accept it and
say so in docs/spec.md.
"""

from __future__ import annotations

import math
import re
from typing import Any

from overcast.spec.errors import FieldError, shown

_UNITS_GIB = {"kb": 1 / 1024**2, "mb": 1 / 1024, "gb": 1.0, "tb": 1024.0, "pb": 1024.0**2}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]i?b?)?\s*(\+)?\s*$", re.IGNORECASE)
_RATIO = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*x\s*$", re.IGNORECASE)
_PORT_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
MAX_PORTS = 1024  # a range wider than this is almost surely a typo


def parse_cpus(value: Any) -> float | None:
    """``4``, ``"4"`` or ``"4+"`` -> 4.0 (vCPUs per node, minimum)."""
    if value is None:
        return None
    return _number(value, "vCPUs", "4 or '4+'", allow_units=False)


def parse_memory(value: Any, cpus: float | None) -> float | None:
    """GiB per node. ``"4x"`` means four times the vCPUs, so it needs ``cpus``."""
    if value is None:
        return None
    if isinstance(value, str) and (ratio := _RATIO.match(value)):
        if cpus is None:
            raise FieldError(f"'{value}' means {ratio.group(1)} GiB per vCPU; set cpus too")
        return float(ratio.group(1)) * cpus
    return _number(value, "memory", "32, '32+', '64GB' or '4x'", allow_units=True)


def parse_disk(value: Any) -> float | None:
    """GiB of boot disk per node: ``256`` or ``"1TB"``."""
    if value is None:
        return None
    return _number(value, "disk size", "256 or '1TB'", allow_units=True)


def parse_ports(value: Any) -> tuple[int, ...]:
    """A port, ``"10052-10100"``, or a list of both -> sorted unique ports."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    ports: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise FieldError(f"expected a port like 8080 or a range like '10022-10040', got {shown(item)}")
        if isinstance(item, int) or item.strip().isdigit():
            low = high = int(item)
        elif match := _PORT_RANGE.match(item):
            low, high = int(match.group(1)), int(match.group(2))
        else:
            raise FieldError(f"expected a port like 8080 or a range like '10022-10040', got {shown(item)}")
        if not 1 <= low <= high <= 65535:
            raise FieldError(f"ports must be between 1 and 65535 with low <= high, got {shown(item)}")
        if high - low >= MAX_PORTS:
            raise FieldError(f"port range {shown(item)} opens more than {MAX_PORTS} ports")
        ports.update(range(low, high + 1))
    return tuple(sorted(ports))


def _number(value: Any, what: str, example: str, *, allow_units: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FieldError(f"expected {what} like {example}, got {shown(value)}")
    if isinstance(value, int | float):
        if not math.isfinite(value):  # YAML's .nan and .inf
            raise FieldError(f"expected {what} like {example}, got {shown(value)}")
        number = float(value)
    else:
        match = _SIZE.match(value)
        if match is None or (match.group(2) and not allow_units):
            raise FieldError(f"expected {what} like {example}, got {shown(value)}")
        unit = (match.group(2) or "gb").lower().replace("i", "")
        unit = unit if unit.endswith("b") else unit + "b"
        number = float(match.group(1)) * _UNITS_GIB[unit]
    if number < 0:
        raise FieldError(f"{what} cannot be negative, got {shown(value)}")
    return number
