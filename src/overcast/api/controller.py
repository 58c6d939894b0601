"""What the API needs from the control loop. The control loop implements this; the API only calls it.

Kept as a Protocol so the API and its tests do not depend on the control loop's internals, and a
server can run without one (then /v1/pools, /v1/providers, /v1/chaos and logs answer 503/404).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

ChaosAction = Literal["down", "up", "capacity", "preempt"]


class Controller(Protocol):
    def chaos(
        self, provider: str, action: ChaosAction, *, job_id: str | None, duration_s: float | None
    ) -> str:
        """Inject a failure (or undo one) and return a one-line description of what was done.

        ``down``/``up``: take a provider away or bring it back; ``capacity``: its pools report out
        of capacity for ``duration_s``; ``preempt``: preempt ``job_id`` (or a running job there).
        Raise ``ValueError`` with a clear message for an unknown provider or job.
        """
        ...

    def pools(self) -> list[dict[str, Any]]:
        """One dict per pool: id, provider, region, accelerator, purchase, capacity, used, health,
        until, price."""
        ...

    def providers(self) -> list[dict[str, Any]]:
        """One dict per provider: at least ``name``; whatever else the loop knows (status, pools...)."""
        ...

    def log_path(self, job_id: str, attempt: int, rank: int, follow: bool = False) -> Path | None:
        """The log file of ``rank`` in ``attempt`` of the job, or None if there is none (yet); ``follow``:
        the caller streams it until the attempt ends (so keep it up to date meanwhile)."""
        ...
