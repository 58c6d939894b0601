"""Accelerator requests in every form SkyPilot and overcast accept.

- ``"H100:8"`` or ``"H100"`` (count 1): one choice.
- ``{"H100": 8}``: one choice; with several keys, a set of alternatives (the cheapest wins).
- ``{"A100:1", "V100:1"}`` (a YAML flow mapping whose values are empty): a set of alternatives.
- ``["A100:8", "H100:8"]``: alternatives in order of preference (SkyPilot's list form is ordered).

Names go through ``catalog.accelerators`` so that "h100", "H100-SXM" and "NVIDIA H100" are one thing,
and an unknown name is an error with the closest known names, never a job that can never be placed.
"""

from __future__ import annotations

import math
from typing import Any

from overcast.catalog.accelerators import canonical_name, suggest
from overcast.spec.errors import FieldError, Problem, SpecError, shown
from overcast.spec.models import MAX_ACCELERATORS_PER_NODE, AcceleratorRequest


def parse_accelerators(value: Any) -> tuple[AcceleratorRequest, ...]:
    """Any accepted form -> per-node alternatives. Raises SpecError naming the bad part."""
    try:
        return parse_accelerator_field(value)[0]
    except FieldError as exc:
        problem = Problem(exc.message, field="accelerators", suggestions=exc.suggestions)
        raise SpecError("<accelerators>", [problem]) from None


def parse_accelerator_field(value: Any) -> tuple[tuple[AcceleratorRequest, ...], bool]:
    """(alternatives, ordered). Raises FieldError for the caller to place in the file."""
    if value is None:
        return (), False
    if isinstance(value, str):
        return _dedupe([_one(value, None)]), False
    if isinstance(value, dict):
        if not value:
            raise FieldError("an empty mapping names no accelerator")
        return _dedupe([_one(str(name), count) for name, count in value.items()]), False
    if isinstance(value, list):
        if not value:
            raise FieldError("an empty list names no accelerator")
        requests: list[AcceleratorRequest] = []
        for item in value:
            if isinstance(item, str):
                requests.append(_one(item, None))
            elif isinstance(item, dict) and len(item) == 1:
                ((name, count),) = item.items()
                requests.append(_one(str(name), count))
            else:
                raise FieldError(f"each list item must look like 'H100:8', got {shown(item)}")
        return _dedupe(requests), len(requests) > 1
    raise FieldError(
        f"expected 'NAME:COUNT', a mapping {{NAME: COUNT}} or a list of them, got {type(value).__name__}"
    )


def _one(text: str, count: Any) -> AcceleratorRequest:
    raw = text.strip()
    name, sep, count_text = raw.rpartition(":") if ":" in raw else (raw, "", "")
    if sep:
        if count is not None:
            raise FieldError(f"'{raw}' gives a count twice; write '{name}: {count}' or '{raw}'")
        count = _count(count_text.strip(), raw)
    elif count is None:
        count = 1
    else:
        count = _count(count, f"{raw}: {count}")  # the mapping form: name the entry as written
    name = name.strip()
    canonical = canonical_name(name)
    if canonical is None:
        raise FieldError(f"unknown accelerator '{name}'", suggest(name))
    return AcceleratorRequest(name=canonical, count=count)


def _count(value: Any, raw: str) -> int:
    if isinstance(value, bool):
        raise FieldError(f"accelerator count in '{raw}' must be a whole number, got {shown(value)}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise FieldError(f"accelerator count in '{raw}' must be a whole number") from None
    if not isinstance(value, int | float) or not math.isfinite(value):  # YAML reads .nan and .inf
        raise FieldError(f"accelerator count in '{raw}' must be a whole number, got {shown(value)}")
    if value != int(value):
        raise FieldError(f"fractional accelerators ('{raw}') are not supported; ask for whole GPUs")
    if value < 1:
        raise FieldError(f"accelerator count in '{raw}' must be at least 1, got {int(value)}")
    if value > MAX_ACCELERATORS_PER_NODE:
        raise FieldError(
            f"accelerator count in '{raw}' is more than a node has (at most {MAX_ACCELERATORS_PER_NODE})"
        )
    return int(value)


def _dedupe(requests: list[AcceleratorRequest]) -> tuple[AcceleratorRequest, ...]:
    return tuple(dict.fromkeys(requests))
