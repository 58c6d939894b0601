"""Build overcast's shipped GPU catalog from the raw provider CSVs.

    python scripts/build_catalog.py [--source DIR] [--out DIR]

Reads every ``*/*vms*.csv`` under --source (default /work/shared/data/cloud-gpu-catalogs), writes
offers.json.gz, SOURCE.json and SUSPICIOUS.md to --out (default src/overcast/catalog/data) and prints
a report of what it kept, fixed and excluded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from overcast.catalog.build import build, report, write
from overcast.catalog.sources import DEFAULT_SOURCE_DIR

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "overcast" / "catalog" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE_DIR, help="raw catalog directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the catalog")
    args = parser.parse_args(argv)
    if not (args.source / "PROVENANCE.md").exists():
        print(
            f"error: {args.source} has no PROVENANCE.md; is it the cloud-gpu-catalogs data set?",
            file=sys.stderr,
        )
        return 2
    result = build(args.source)
    write(result, args.out)
    print(report(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
