"""The raw catalog files: which provider each one is, where it came from, and a tolerant CSV reader.

Source facts (repository, commit, date) are read from the data set's PROVENANCE.md rather than typed in
here, so that a refreshed data set carries its own record.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOURCE_DIR = Path("/work/shared/data/cloud-gpu-catalogs")
LICENSE = "not stated (no LICENSE file upstream); prices are facts, the source is recorded per file"

# file name prefix -> provider name we use ("do" is DigitalOcean's SkyPilot name)
PROVIDER_BY_PREFIX = {"do": "digitalocean"}


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    provider: str
    repo: str
    upstream_path: str | None
    commit: str | None
    date: str | None  # day the upstream version was made, when the source says so


def provider_of(file_name: str) -> str:
    prefix = file_name.split("_", 1)[0].lower()
    return PROVIDER_BY_PREFIX.get(prefix, prefix)


def _provenance_tables(text: str) -> dict[str, list[str]]:
    """file name -> cells of its row in any markdown table of PROVENANCE.md."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0].endswith(".csv"):
            rows.setdefault(cells[0], cells)
    return rows


def discover(source_dir: Path) -> list[SourceFile]:
    """Every ``*vms*.csv`` under ``source_dir`` with its provenance, in a stable order."""
    provenance = source_dir / "PROVENANCE.md"
    text = provenance.read_text() if provenance.exists() else ""
    rows = _provenance_tables(text)
    repos = {
        "skypilot-catalog": "https://github.com/skypilot-org/skypilot-catalog",
        "anycloud-sh": "https://github.com/anycloud-sh/catalog",
    }
    # section B names one commit and date for the whole anycloud-sh snapshot
    anycloud = re.search(r"anycloud-sh/catalog, commit ([0-9a-f]{40}) \((\d{4}-\d{2}-\d{2})", text)
    found: list[SourceFile] = []
    for path in sorted(source_dir.glob("*/*.csv")):
        if "vms" not in path.name:
            continue  # common_accelerators_v9.csv lists names, not offers
        cells = rows.get(path.name, [])
        commit = next((c for c in cells if re.fullmatch(r"[0-9a-f]{40}", c)), None)
        date = next((c for c in cells if re.fullmatch(r"\d{4}-\d{2}-\d{2}", c)), None)
        if path.parent.name == "anycloud-sh" and anycloud:
            commit = commit or anycloud.group(1)
        found.append(
            SourceFile(
                path=path,
                provider=provider_of(path.name),
                repo=repos.get(path.parent.name, path.parent.name),
                upstream_path=cells[1] if len(cells) > 1 else None,
                commit=commit,
                date=date,
            )
        )
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row by column name) for each data row.

    Tolerant of one upstream quirk: Azure writes the Generation value "V1,V2" unquoted, so such rows have
    more fields than the header; the surplus fields are joined back into the last column.
    """
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        width = len(header)
        for fields in reader:
            if not fields:
                continue
            if len(fields) > width:
                fields = [*fields[: width - 1], ",".join(fields[width - 1 :])]
            elif len(fields) < width:
                fields = fields + [""] * (width - len(fields))
            yield reader.line_num, dict(zip(header, fields, strict=True))
