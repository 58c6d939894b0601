"""Questions ``overcast gpus`` asks of the catalog: who offers what, and where is it cheapest.

Pure functions over ``Offer`` lists, so the CLI only parses and renders.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from overcast.catalog.accelerators import accelerator_kind, canonical_name, memory_gib, suggest
from overcast.catalog.load import natural_key
from overcast.catalog.offer import Offer


class QueryError(ValueError):
    """A user's request that names something the catalog does not have (message says what and why)."""


@dataclass(frozen=True, slots=True)
class Request:
    accelerator: str  # canonical name
    count: float | None  # accelerators per instance; None: any


@dataclass(frozen=True, slots=True)
class AcceleratorSummary:
    accelerator: str
    kind: str
    memory_gib: float | None
    providers: tuple[str, ...]
    counts: tuple[float, ...]  # accelerators per instance on offer
    cheapest: Offer | None  # lowest on-demand $/GPU-h
    cheapest_spot: Offer | None  # lowest spot $/GPU-h


def parse_request(text: str) -> Request:
    """ "H100:8" -> Request("H100", 8.0); unknown names raise QueryError with suggestions."""
    raw, _, count_text = text.partition(":")
    if not raw.strip():
        raise QueryError(f"no accelerator name in {text!r}: write NAME or NAME:COUNT, e.g. H100:8")
    name = canonical_name(raw)
    if name is None:
        hint = suggest(raw)
        did_you_mean = f"; did you mean {', '.join(hint)}?" if hint else ""
        raise QueryError(f"unknown accelerator {raw!r}{did_you_mean} (`overcast gpus` lists them all)")
    if not count_text:
        return Request(name, None)
    try:
        count = float(count_text)
    except ValueError:
        count = -1.0
    if not 0 < count < math.inf:  # also rejects "nan" and "inf", which float() accepts
        raise QueryError(
            f"bad count {count_text!r} in {text!r}: write NAME:COUNT with COUNT > 0, e.g. H100:8"
        )
    return Request(name, count)


def _match(value: str, wanted: Sequence[str]) -> bool:
    return not wanted or value.lower() in wanted


def filter_offers(
    offers: Iterable[Offer],
    *,
    request: Request | None = None,
    providers: Sequence[str] = (),
    region: str | None = None,
    spot: bool = False,
) -> list[Offer]:
    """Offers that fit every given filter (provider and region compare case-insensitively)."""
    wanted = [p.lower() for p in providers]
    region_l = region.lower() if region else None
    return [
        o
        for o in offers
        if (request is None or o.accelerator == request.accelerator)
        and (request is None or request.count is None or o.accelerator_count == request.count)
        and _match(o.provider, wanted)
        and (region_l is None or o.region.lower() == region_l)
        and (not spot or o.spot_price is not None)
    ]


def check_filters(offers: Sequence[Offer], providers: Sequence[str], region: str | None) -> None:
    """Raise QueryError for a provider or region no offer has (a typo, most likely)."""
    known = sorted({o.provider for o in offers})
    for p in providers:
        if p.lower() not in known:
            close = difflib.get_close_matches(p.lower(), known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
            raise QueryError(f"unknown provider {p!r}; {hint}")
    if region is not None:
        wanted = [p.lower() for p in providers]
        regions = {o.region.lower() for o in offers if _match(o.provider, wanted)}
        if region.lower() not in regions:
            close = difflib.get_close_matches(region.lower(), sorted(regions), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise QueryError(f"no offers in region {region!r}{hint}")


def _per_gpu(offer: Offer, spot: bool) -> float:
    price = offer.spot_price_per_gpu if spot else offer.price_per_gpu
    return float("inf") if price is None else price


def sort_key(offer: Offer, spot: bool = False) -> tuple[float, float, str, str, str]:
    """Cheapest $/GPU-h first; then bigger instances, then stable names."""
    return (
        _per_gpu(offer, spot),
        -offer.accelerator_count,
        offer.provider,
        offer.region,
        offer.instance_type,
    )


def cheapest_per_provider(offers: Iterable[Offer], spot: bool = False) -> list[Offer]:
    """The cheapest offer ($/GPU-h, on demand or spot) of each provider, cheapest provider first."""
    best: dict[str, Offer] = {}
    for o in offers:
        if o.provider not in best or sort_key(o, spot) < sort_key(best[o.provider], spot):
            best[o.provider] = o
    return sorted(best.values(), key=lambda o: sort_key(o, spot))


def summarize(offers: Iterable[Offer], include_all: bool = False) -> list[AcceleratorSummary]:
    """One line per accelerator; GPUs only unless ``include_all`` (TPUs, ASICs, FPGAs)."""
    groups: dict[str, list[Offer]] = {}
    for o in offers:
        if include_all or accelerator_kind(o.accelerator) == "gpu":
            groups.setdefault(o.accelerator, []).append(o)
    out = []
    for name in sorted(groups, key=natural_key):
        group = groups[name]
        on_demand = [o for o in group if o.price is not None]
        spots = [o for o in group if o.spot_price is not None]
        out.append(
            AcceleratorSummary(
                accelerator=name,
                kind=accelerator_kind(name),
                memory_gib=memory_gib(name),
                providers=tuple(sorted({o.provider for o in group})),
                counts=tuple(sorted({o.accelerator_count for o in group})),
                cheapest=min(on_demand, key=sort_key) if on_demand else None,
                cheapest_spot=min(spots, key=lambda o: sort_key(o, True)) if spots else None,
            )
        )
    return out
