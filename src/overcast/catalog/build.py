"""Build the shipped catalog from the raw provider CSVs (run through scripts/build_catalog.py).

Output, all deterministic so a rebuild from the same sources is byte-identical:
- offers.json.gz: every accelerator offer, normalised (see load.OFFER_FIELDS);
- SOURCE.json: per source file its repo, commit, date, sha256 and row counts, plus the findings summary;
- SUSPICIOUS.md: every suspicious row, what was wrong and what we did about it.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

from overcast.catalog.gcp import gcp_offers
from overcast.catalog.load import OFFER_FIELDS, OFFERS_FILE, SOURCE_FILE
from overcast.catalog.normalise import Finding, normalise_row
from overcast.catalog.offer import Offer
from overcast.catalog.sources import LICENSE, SourceFile, discover, read_rows, sha256

SUSPICIOUS_FILE = "SUSPICIOUS.md"


@dataclass
class BuildResult:
    offers: list[Offer]
    findings: list[Finding]
    files: list[dict[str, Any]] = field(default_factory=list)


def _file_offers(source: SourceFile) -> tuple[list[tuple[Offer, str]], list[Finding], int, int]:
    """((offer, file:line) pairs, findings, data rows, accelerator rows) of one source file."""
    rows = list(read_rows(source.path))
    accelerator_rows = sum(1 for _, r in rows if r.get("AcceleratorName", "").strip())
    if source.provider == "gcp":
        offers, findings = gcp_offers(source.path.name, rows)
        return offers, findings, len(rows), accelerator_rows
    offers, findings = [], []
    for line, row in rows:
        if not row.get("AcceleratorName", "").strip():
            continue  # CPU-only machine
        where = f"{source.path.name}:{line}"
        offer, found = normalise_row(source.provider, where, row)
        findings.extend(found)
        if offer is not None:
            offers.append((offer, where))
    return offers, findings, len(rows), accelerator_rows


def _drop_duplicates(offers: list[tuple[Offer, str]], findings: list[Finding]) -> list[Offer]:
    """Keep the first offer per (provider, region, zone, instance type): pool ids must be unique."""
    seen: dict[tuple[str, str, str | None, str], tuple[Offer, str]] = {}
    for o, source in offers:
        key = (o.provider, o.region, o.zone, o.instance_type)
        if key in seen:
            first, first_source = seen[key]
            how = "identical to" if astuple(first) == astuple(o) else "differs from"
            findings.append(
                Finding(
                    o.provider, source, o.instance_type, o.region, "duplicate",
                    f"{how} {first_source}", "excluded",
                )
            )  # fmt: skip
            continue
        seen[key] = (o, source)
    return [o for o, _ in seen.values()]


def build(source_dir: Path) -> BuildResult:
    offers: list[tuple[Offer, str]] = []
    findings: list[Finding] = []
    files: list[dict[str, Any]] = []
    for source in discover(source_dir):
        file_offers, file_findings, rows, accelerator_rows = _file_offers(source)
        offers.extend(file_offers)
        findings.extend(file_findings)
        files.append(
            {
                "file": f"{source.path.parent.name}/{source.path.name}",
                "provider": source.provider,
                "repo": source.repo,
                "upstream_path": source.upstream_path,
                "commit": source.commit,
                "date": source.date,
                "sha256": sha256(source.path),
                "rows": rows,
                "accelerator_rows": accelerator_rows,
                "offers": len(file_offers),
                "excluded": sum(1 for f in file_findings if f.action == "excluded"),
            }
        )
    unique = _drop_duplicates(offers, findings)
    unique.sort(key=lambda o: (o.provider, o.accelerator, o.region, o.zone or "", o.instance_type))
    return BuildResult(unique, findings, files)


def _summary(findings: list[Finding]) -> dict[str, Any]:
    by_reason: dict[str, dict[str, Any]] = {}
    for f in findings:
        entry = by_reason.setdefault(f.reason, {"action": f.action, "rows": 0, "by_provider": Counter()})
        entry["rows"] += 1
        entry["by_provider"][f.provider] += 1
    return {
        reason: {**e, "by_provider": dict(sorted(e["by_provider"].items()))}
        for reason, e in sorted(by_reason.items())
    }


def source_record(result: BuildResult) -> dict[str, Any]:
    return {
        "license": LICENSE,
        "dates": "date = the day the upstream file version was made, where the source says so; the code "
        "index the skypilot-catalog files were read from does not expose it (see PROVENANCE.md there)",
        "files": result.files,
        "totals": {
            "offers": len(result.offers),
            "providers": len({o.provider for o in result.offers}),
            "accelerators": len({o.accelerator for o in result.offers}),
            "excluded_rows": sum(1 for f in result.findings if f.action == "excluded"),
            "flagged_rows": len({(f.source, f.instance_type) for f in result.findings}),
        },
        "suspicious": _summary(result.findings),
    }


def suspicious_markdown(result: BuildResult) -> str:
    lines = [
        "# Suspicious catalog rows",
        "",
        "Written by scripts/build_catalog.py. Each row of a source file that looked wrong, and what the",
        "build did: kept (used as is, flagged), fixed (used after the change said), excluded (not shipped).",
        "",
        "| reason | action | rows | providers |",
        "|---|---|---|---|",
    ]
    for reason, e in _summary(result.findings).items():
        providers = ", ".join(f"{p} {n}" for p, n in e["by_provider"].items())
        lines.append(f"| {reason} | {e['action']} | {e['rows']} | {providers} |")
    grouped: dict[str, list[Finding]] = defaultdict(list)
    for f in result.findings:
        grouped[f.reason].append(f)
    for reason, items in sorted(grouped.items()):
        lines += [
            "",
            f"## {reason} ({items[0].action})",
            "",
            "| source | provider | instance | region | detail |",
        ]
        lines.append("|---|---|---|---|---|")
        lines += [
            f"| {f.source} | {f.provider} | {f.instance_type} | {f.region} | {f.detail} |" for f in items
        ]
    return "\n".join(lines) + "\n"


def write(result: BuildResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = {"fields": list(OFFER_FIELDS), "rows": [list(astuple(o)) for o in result.offers]}
    payload = json.dumps(table, separators=(",", ":")).encode()
    # mtime=0 and no file name in the header: the same input gives the same bytes
    with (out_dir / OFFERS_FILE).open("wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as gz:
        gz.write(payload)
    (out_dir / SOURCE_FILE).write_text(json.dumps(source_record(result), indent=1) + "\n")
    (out_dir / SUSPICIOUS_FILE).write_text(suspicious_markdown(result))


def report(result: BuildResult) -> str:
    """The short report the build script prints."""
    record = source_record(result)
    t = record["totals"]
    lines = [
        f"{t['offers']} offers from {t['providers']} providers, {t['accelerators']} accelerator names; "
        f"{t['excluded_rows']} rows excluded, {t['flagged_rows']} rows flagged",
        f"{'file':42} {'rows':>7} {'accel':>6} {'offers':>6} {'excl':>5}",
    ]
    lines += [
        f"{f['file']:42} {f['rows']:7} {f['accelerator_rows']:6} {f['offers']:6} {f['excluded']:5}"
        for f in result.files
    ]
    lines.append("suspicious rows (reason, action, rows):")
    lines += [f"  {r:26} {e['action']:9} {e['rows']:5}" for r, e in record["suspicious"].items()]
    return "\n".join(lines)
