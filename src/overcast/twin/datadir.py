"""Where the twin finds traces that are read at run time (not shipped with the package)."""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED = Path(__file__).parent / "data"


def data_dir() -> Path | None:
    """The first existing of $OVERCAST_DATA_DIR, <repo>/../shared/data, /work/shared/data."""
    candidates = []
    if env := os.environ.get("OVERCAST_DATA_DIR"):
        candidates.append(Path(env))
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo.parent / "shared" / "data", Path("/work/shared/data")]
    for path in candidates:
        if path.is_dir():
            return path
    return None


class TraceMissing(FileNotFoundError):
    """A trace file is neither shipped nor in the data directory."""


def trace_path(relative: str) -> Path:
    """Resolve ``relative`` (e.g. "gavel-traces/msr/seed=0") against shipped data, then the data dir."""
    shipped = SHIPPED / relative
    if shipped.exists():
        return shipped
    root = data_dir()
    if root is not None and (root / relative).exists():
        return root / relative
    where = f"{root}" if root else "no data directory (set OVERCAST_DATA_DIR)"
    raise TraceMissing(f"trace {relative!r} not found in {SHIPPED} or {where}")
