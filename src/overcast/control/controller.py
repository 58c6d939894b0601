"""The API's view of the control loop (overcast.api.controller.Controller): pools, providers, chaos, logs."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from overcast.backends.cloud_backend import CloudBackend
from overcast.backends.local import LocalBackend
from overcast.control.health import apply_learned
from overcast.control.loop import ControlLoop
from overcast.control.snapshot import backend_pools


class LoopController:
    def __init__(self, loop: ControlLoop) -> None:
        self.loop = loop

    def _local(self, provider: str) -> LocalBackend:
        found = [
            b for b in self.loop.backends.values()
            if isinstance(b, LocalBackend) and provider in (b.cluster.name, b.cluster.provider)
        ]  # fmt: skip
        if not found:
            known = [b.cluster.name for b in self.loop.backends.values() if isinstance(b, LocalBackend)]
            names = ", ".join(sorted(known)) or "none"
            raise ValueError(f"unknown provider {provider!r}: chaos works on local providers ({names})")
        return found[0]

    def chaos(self, provider: str, action: str, *, job_id: str | None, duration_s: float | None) -> str:
        backend = self._local(provider)
        store = self.loop.store
        name = backend.cluster.name
        if action == "down":
            lost = backend.set_down(True)
            store.add_event(None, "chaos", f"{name} down ({len(lost)} launches lost)")
            return f"{name} is down; {len(lost)} running launches killed"
        if action == "up":
            backend.set_down(False)
            backend.set_capacity_error(False)
            store.add_event(None, "chaos", f"{name} up")
            return f"{name} is up"
        if action == "capacity":
            until = time.time() + duration_s if duration_s else None
            backend.set_capacity_error(True, until)
            span = f"for {duration_s:.0f}s" if duration_s else "until 'up'"
            store.add_event(None, "chaos", f"{name} out of capacity {span}")
            return f"{name} answers 'out of capacity' {span}"
        if action == "preempt":
            target = job_id or self._running_on(backend)
            if target is None:
                raise ValueError(f"no job runs on {name}")
            attempt = backend.preempt(target)
            store.add_event(target, "chaos", f"preempted attempt {attempt} on {name}")
            return f"preempted job {target} attempt {attempt} on {name}"
        raise ValueError(f"unknown chaos action {action!r}: use down, up, capacity or preempt")

    def _running_on(self, backend: LocalBackend) -> str | None:
        active = sorted(backend.active())
        return active[0][0] if active else None

    def pools(self) -> list[dict[str, Any]]:
        pools = backend_pools(self.loop.rt)
        learned = self.loop.store.pool_health()
        apply_learned(pools, learned, time.time())
        rows = []
        for pool in pools:
            record = learned.get(pool.id)
            rows.append(
                {
                    "id": pool.id, "provider": pool.provider, "region": pool.region,
                    "accelerator": pool.accelerator, "gpus_per_node": pool.gpus_per_node,
                    "purchase": str(pool.purchase), "capacity": pool.capacity_nodes, "used": pool.used_nodes,
                    "health": str(pool.health), "until": pool.unhealthy_until,
                    "failures": record.failures if record else 0, "detail": record.detail if record else "",
                    "price": pool.price_per_node_hour, "backend": pool.backend,
                }
            )  # fmt: skip
        return rows

    def providers(self) -> list[dict[str, Any]]:
        rows = []
        for backend in self.loop.backends.values():
            row: dict[str, Any] = {"name": backend.name, "backend": backend.name}
            if isinstance(backend, LocalBackend):
                faults = backend.faults()
                status = "down" if faults["down"] else "out-of-capacity" if faults["capacity"] else "ok"
                row |= {"name": backend.cluster.name, "status": status, "pools": [backend.pool_id]}
            rows.append(row)
        return rows

    def log_path(self, job_id: str, attempt: int, rank: int, follow: bool = False) -> Path | None:
        if not job_id or "/" in job_id or job_id.startswith("."):
            return None
        copied = self._cloud_log(job_id, attempt, rank, follow)
        if copied is not None:
            return copied
        # each local cluster writes its logs under its own home (a fleet may give it one)
        homes = [b.home for b in self.loop.rt.backends.values() if isinstance(b, LocalBackend)]
        for home in dict.fromkeys([*homes, self.loop.rt.home]):
            path = home / "logs" / job_id / str(attempt) / f"node-{rank}.log"
            if path.exists():
                return path
        return None

    def _cloud_log(self, job_id: str, attempt: int, rank: int, follow: bool) -> Path | None:
        """A cloud node's log, copied from its account's ``logs_url`` (and, for a follow, kept up to date
        while the attempt runs: a one-off read starts no thread). The attempt's own backend when the
        store knows it (the job's, for its latest attempt; its launch record's, for an earlier one), else
        every cloud backend: only the one that ran it has parts to copy."""
        clouds = [b for b in self.loop.rt.backends.values() if isinstance(b, CloudBackend)]
        if not clouds:
            return None
        store = self.loop.store
        job = store.get(job_id)
        if job is not None and job.attempt == attempt:
            clouds = [b for b in clouds if b.name == job.backend]
        elif job is not None:  # an earlier attempt: the backend its launch record names
            records = store.launches(active_only=False, job_id=job_id)
            ran = {r.backend for r in records if r.attempt == attempt}
            clouds = [b for b in clouds if b.name in ran] or clouds
        over = partial(store.attempt_over, job_id, attempt) if follow else None
        for backend in clouds:
            path = backend.log_path(job_id, attempt, rank, over)
            if path is not None:
                return path
        return None
