"""Where the twin finds its traces: the shared data directory, then the few shipped with the package.

Traces without a permissive license are only ever read from the data directory at run time; the
package ships small derived files from MIT/Apache/CC BY datasets (see data/SOURCES.md), with the same
relative paths and identical rows, so a run gives the same result with or without the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED = Path(__file__).parent / "data"


def data_dir() -> Path | None:
    """$OVERCAST_DATA_DIR when set (even if it does not exist), else the first existing of
    <repo>/../shared/data and /work/shared/data."""
    if (env := os.environ.get("OVERCAST_DATA_DIR")) is not None:
        return Path(env) if Path(env).is_dir() else None
    repo = Path(__file__).resolve().parents[3]
    for path in (repo.parent / "shared" / "data", Path("/work/shared/data")):
        if path.is_dir():
            return path
    return None


class TraceMissing(FileNotFoundError):
    """A trace file is neither in the data directory nor shipped."""


def trace_path(relative: str) -> Path:
    """Resolve ``relative`` (e.g. "gavel-traces/msr/seed=0") in the data dir, then in shipped data."""
    root = data_dir()
    if root is not None and (root / relative).exists():
        return root / relative
    shipped = SHIPPED / relative
    if shipped.exists():
        return shipped
    where = f"{root}" if root else "no data directory (set OVERCAST_DATA_DIR)"
    raise TraceMissing(f"trace {relative!r} not found in {where} nor shipped in {SHIPPED}")
