"""The server's services: a controller and a load balancer for every service in the store.

``overcast up`` runs one ``ServiceSupervisor`` in a thread. Each second it reads the services table and
starts a runner for a new service, hands a changed spec to its runner (a rolling update), and for a
service marked for deletion stops every replica and removes the row; a replica that will not stop keeps
the row (and its launch record) and is tried again every ``stop_retry`` seconds from the ledger.

A thread per service, not one tick of every service per loop tick: a tick probes each replica with a
blocking HTTP request (up to the spec's ``timeout_seconds``) and calls the backends, so one service with
slow or dead replicas would otherwise hold back every other service and the job loop. The load balancers
are asyncio servers and all share one event loop thread. The backends are shared (``serve/shared.py``):
each service's controller sees only its own replicas' events.

Stopping the server (``close``) stops the runners but not the replicas: the next server adopts them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from overcast.backends.base import Backend
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer, serve
from overcast.serve.shared import SharedBackend
from overcast.spec.models import ServiceSpec
from overcast.store import ServiceRecord, Store

Log = Callable[[str], None]


class ServiceRunner:
    """One stored service: its controller ticking in its own thread, its load balancer on the shared loop."""

    def __init__(
        self, record: ServiceRecord, shared: Sequence[SharedBackend], home: Path,
        loop: asyncio.AbstractEventLoop, store: Store, *, host: str, interval: float, log: Log,
        tick: bool = True,
    ) -> None:  # fmt: skip
        """``tick`` False: adopt the service's replicas but manage nothing (to stop them)."""
        self.id, self.name, self.version = record.id, record.name, record.version
        self.store, self.loop, self.shared, self.interval = store, loop, shared, interval
        self.lb = LoadBalancer(record.name)
        views = [s.view(record.id) for s in shared]
        try:
            self.ctl = ServiceController(
                record.spec, views, self.lb, home=home, key=record.id, store=store,
                log=lambda m: log(f"{self.name}: {m}"),
            )  # fmt: skip
        except Exception:
            self._release()
            raise
        self.host, self.port, self.log = host, record.lb_port, log
        self.site: Any = None
        self.url: str | None = None
        self._pending: ServiceSpec | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._final = "detach"  # what the runner's thread does after its last tick (close() sets it)
        self._stopped_all = False  # shutdown() stopped every replica
        self._thread = threading.Thread(target=self._run, name=f"service-{self.name}", daemon=True)
        if tick:
            self._thread.start()

    def _listen(self) -> None:
        """Called after the first tick (adoption, probes): a restarted service answers its first request."""
        for port in (self.port or 0, 0):  # its old port, else (taken now) any free one: the API shows it
            try:
                coro = serve(self.lb, self.host, port)
                self.site, self.port = asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)
                break
            except OSError:
                if port == 0:
                    raise
        self.url = f"http://{self.host}:{self.port}"
        self.log(f"{self.name}: load balancer on {self.url}")

    def update(self, spec: ServiceSpec, version: int) -> None:
        """Roll out ``spec`` (applied by the runner's own thread, between ticks)."""
        with self._lock:
            self._pending, self.version = spec, version

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # on this thread, after its last tick: no tick can launch a replica after the stop
            self._finish()

    def _finish(self) -> None:
        if self._final != "shutdown":
            self.ctl.detach()
            return
        try:
            self.ctl.shutdown()
            self._stopped_all = True
        except Exception as exc:  # the ledger (and launch records) keep the replicas it could not stop
            self.log(f"{self.name}: not every replica stopped: {type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        last: dict[str, Any] | None = None
        while True:
            with self._lock:
                spec, self._pending = self._pending, None
            try:
                if spec is not None:
                    self.ctl.update(spec)
                self.ctl.tick()
                if self.site is None:
                    self._listen()
                status = self.ctl.status() | {"url": self.url, "at": round(time.time(), 1)}
                if last is None or {**status, "at": 0} != {**last, "at": 0}:  # write changes only
                    self.store.set_service_status(self.id, status, lb_port=self.port)
                    last = status
            except Exception as exc:  # a bad tick (a backend error, the database away) is retried
                self.log(f"{self.name}: tick failed: {type(exc).__name__}: {exc}")
            if self._stop.wait(self.interval):
                return

    def close(self, *, stop_replicas: bool) -> bool:
        """True when ``stop_replicas`` and every replica was stopped (false too while a tick is stuck)."""
        self._final = "shutdown" if stop_replicas else "detach"
        self._stop.set()
        if self._thread.ident is None:  # never started (tick=False): finish here
            self._finish()
        else:
            self._thread.join(30)
            if self._thread.is_alive():  # a tick is stuck in a probe or a backend call
                self.log(f"{self.name}: its tick is still running; it will {self._final} when it returns")
        if self.site is not None:
            asyncio.run_coroutine_threadsafe(self.site.cleanup(), self.loop).result(10)
        self._release()
        return self._stopped_all and not self._thread.is_alive()

    def _release(self) -> None:
        for s in self.shared:
            s.release(self.id)


class ServiceSupervisor:
    def __init__(
        self, store: Store, backends: Sequence[Backend], home: Path, *, host: str = "127.0.0.1",
        interval: float = 0.5, log: Log = lambda _msg: None, stop_retry: float = 10.0,
    ) -> None:  # fmt: skip
        """``stop_retry``: seconds between tries to stop a deleted service's replicas that would not stop."""
        self.store, self.home, self.host, self.interval, self.log = store, home, host, interval, log
        self.stop_retry = stop_retry
        self._retry_at: dict[str, float] = {}  # deleted services whose replicas did not all stop
        self.shared = [SharedBackend(b) for b in backends]
        self.runners: dict[str, ServiceRunner] = {}
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, name="service-lbs", daemon=True)
        self._loop_thread.start()

    def run(self, stop: threading.Event, every: float = 1.0) -> None:
        """Sync with the store until ``stop``; then stop the runners (the replicas keep running)."""
        try:
            while True:
                try:
                    self.sync()
                except Exception as exc:  # the database away: try again next time
                    self.log(f"services: sync failed: {type(exc).__name__}: {exc}")
                if stop.wait(every):
                    return
        finally:
            self.close()

    def sync(self) -> None:
        records = {s.id: s for s in self.store.services()}
        for sid in [sid for sid in self.runners if sid not in records]:  # removed behind our back
            self.runners.pop(sid).close(stop_replicas=True)
        for record in records.values():
            runner = self.runners.get(record.id)
            if record.state == "deleting":
                self._delete(record, runner)
            elif runner is None:
                self._start(record)
            elif record.version != runner.version:
                self.log(f"{record.name}: version {record.version}")
                runner.update(record.spec, record.version)

    def _start(self, record: ServiceRecord) -> None:
        try:
            self.runners[record.id] = ServiceRunner(
                record, self.shared, self.home, self.loop, self.store,
                host=self.host, interval=self.interval, log=self.log,
            )  # fmt: skip
        except Exception as exc:  # ServiceBusy (another controller has it), a bad port: said in its status
            self.log(f"{record.name}: cannot start: {exc}")
            self.store.set_service_status(record.id, {"error": str(exc)}, lb_port=record.lb_port)
            return

    def _delete(self, record: ServiceRecord, runner: ServiceRunner | None) -> None:
        if time.monotonic() < self._retry_at.get(record.id, 0.0):
            return
        if runner is None:  # deleted while no runner had it (a restart, a failed stop): adopt, then stop
            try:
                runner = ServiceRunner(
                    record, self.shared, self.home, self.loop, self.store,
                    host=self.host, interval=self.interval, log=self.log, tick=False,
                )  # fmt: skip
            except Exception as exc:
                self.log(f"{record.name}: cannot stop: {exc}")
                return
        else:
            del self.runners[record.id]
        if not runner.close(stop_replicas=True):  # the row stays (deleting): stopped from the ledger later
            self._retry_at[record.id] = time.monotonic() + self.stop_retry
            self.log(f"{record.name}: replicas left running; stopping them again in {self.stop_retry:g} s")
            return
        self._retry_at.pop(record.id, None)
        if self.store.delete_service(record.id):
            self.log(f"{record.name}: deleted")

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close(stop_replicas=False)
        self.runners.clear()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(10)
