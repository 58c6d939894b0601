"""What the three cloud backends (aws, azure, oci) share: the catalog pools, the acknowledged-event state,
the poll state machine, stop's grace period, active(), redeliver() and log_path() (the nodes' logs,
copied from the account's ``logs_url``: ``cloud_logs``).

A provider subclass supplies the API calls through a few hooks (``_gangs``, ``_gang``, ``_ask_stop``,
``_end``, ``_clean_up``, ``_in_account``); the gang objects follow ``cloud_gangs`` (``key``, ``live``,
``stop_requested``, ``all_running()``, ``agent_missing_since()``, ``terminal_event()``).

Local state (``$OVERCAST_HOME/<provider>/<name>/acked.json``) holds lists of gang keys: ``started`` and
``reported`` (events the loop has acknowledged), ``stopped`` (gangs the loop stopped: no events), the gangs
``stopping`` (key -> wall-clock deadline: a stop() within its grace period; no events, and the poll's
clean-up leaves their live nodes alone), plus whatever a provider adds. The provider's API is the truth
about what runs; losing the file replays the last outcomes, which the loop ignores as stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from overcast.backends.base import BackendEvent, CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.backends.cloud_gangs import gang_key
from overcast.backends.cloud_log_copies import LogCopies
from overcast.backends.local_runner import write_json_atomic
from overcast.catalog.offer import Offer
from overcast.catalog.pools import offer_pools
from overcast.placement.pool import Health, Pool
from overcast.store.engine import overcast_home

STOP_POLL_SECONDS = 0.2  # how often stop() looks whether the gang has ended within its grace period
STOP_SLACK_SECONDS = 60.0  # a "stopping" mark outlives its grace by this much (a stop() that crashed)

State = dict[str, Any]


class CloudBackend:
    """The shared half of a cloud backend; see the module docstring for the hooks."""

    provider: ClassVar[str]  # "aws", "azure", "oci": catalog provider, state folder, pool label
    launch_holds_lock: ClassVar[bool] = True  # launch() holds the lock poll() and active() need (minutes)
    no_agent: ClassVar[str]  # the FAILED detail of a gang whose agents never came up
    state_lists: ClassVar[tuple[str, ...]] = ("started", "reported", "stopped")
    settings: Any  # the provider's settings: name, region, max_nodes, purchases, agent_timeout_seconds

    def _setup(
        self,
        settings: Any,
        types: Sequence[str],
        home: Path | None,
        offers: list[Offer] | None,
        fold_case: bool = False,
    ) -> None:
        """The common part of __init__ (after the provider has made its clients)."""
        self.settings = settings
        self.name = f"{self.provider}:{settings.name}"
        if offers is None:
            from overcast.catalog.load import load_offers

            offers = load_offers()
        self._pools = {p.id: p for p in self._catalog_pools(offers, types, fold_case)}
        base = home or overcast_home()
        self.dir = base / self.provider / settings.name
        self.dir.mkdir(parents=True, exist_ok=True)
        url = getattr(settings, "logs_url", None)
        self._logs = LogCopies(url, base, logging.getLogger(__name__).warning) if url else None
        self._lock = threading.RLock()
        self._unacked: list[tuple[str, str]] = []  # (what, gang key) delivered by the last poll

    # -- pools --------------------------------------------------------------------------------------

    def _catalog_pools(self, offers: list[Offer], types: Sequence[str], fold_case: bool) -> list[Pool]:
        """The catalog's offers for the configured region and types (compared case-blind with
        ``fold_case``): one pool per (type, zone, purchase), ``max_nodes`` as capacity."""
        s = self.settings

        def fold(name: str) -> str:
            return name.lower() if fold_case else name

        wanted = {fold(t) for t in types}
        mine = [
            o
            for o in offers
            if o.provider == self.provider and o.region == s.region and fold(o.instance_type) in wanted
        ]
        missing = sorted(wanted - {fold(o.instance_type) for o in mine})
        if missing:
            raise ValueError(
                f"{self.provider} {s.name!r}: no catalog offer for {', '.join(missing)} in {s.region}"
            )
        pools = [p for p in offer_pools(self._placed(mine)) if p.purchase.value in s.purchases]
        for pool in pools:
            pool.capacity_nodes = s.max_nodes
            pool.backend = self.name
            pool.labels = {self.provider: "true"}
        return pools

    def _placed(self, offers: list[Offer]) -> list[Offer]:
        """Hook: the offers as placed in zones (Azure's catalog prices per region)."""
        return offers

    def _in_account(self, pools: list[Pool]) -> list[Pool]:
        """Hook: the pools whose zone this account can use (may ask the API; ProviderDown: DOWN)."""
        return pools

    def pools(self) -> list[Pool]:
        try:
            used: dict[str, int] = {}
            for gang in self._gangs():
                used[gang.pool_id] = used.get(gang.pool_id, 0) + len(gang.live)
            usable = self._in_account(list(self._pools.values()))
            health = Health.OK
        except ProviderDown:
            used, usable, health = {}, list(self._pools.values()), Health.DOWN
        cap = self.settings.max_nodes
        return [
            dataclasses.replace(
                p, used_nodes=min(used.get(p.id, 0), cap), health=health, labels=dict(p.labels)
            )
            for p in usable
        ]

    def _own_pool(self, request: LaunchRequest) -> Pool:
        pool = self._pools.get(request.pool.id)
        if pool is None:
            raise ValueError(f"pool {request.pool.id} does not belong to backend {self.name}")
        return pool

    # -- provider hooks -----------------------------------------------------------------------------

    def _gangs(self, state: State | None = None) -> list[Any]:
        """Our gangs as the API shows them, in (job, attempt) order."""
        raise NotImplementedError

    def _gang(self, job_id: str, attempt: int) -> Any | None:
        raise NotImplementedError

    def _ask_stop(self, gang: Any) -> None:
        """Tag the gang's live nodes ``stop``: their agents send the job SIGTERM."""
        raise NotImplementedError

    def _end(self, gang: Any) -> None:
        """End what is left of a stopped gang (terminate, or delete)."""
        raise NotImplementedError

    def _clean_up(self, gang: Any, state: State) -> None:
        """Hook: each poll, for a gang that gets no more events (stopped, reported or stop-tagged)."""

    # -- stop, poll, active -------------------------------------------------------------------------

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        """Ask the agents to SIGTERM the job, wait up to the grace period for the nodes to end, then end
        what is left."""
        # "stopping", not "stopped": a poll during the grace period must not end the live nodes
        self._silence(job_id, attempt, until=time.time() + grace_seconds + STOP_SLACK_SECONDS)
        try:
            gang = self._gang(job_id, attempt)
            if gang is not None and grace_seconds > 0 and gang.live:
                self._ask_stop(gang)
                deadline = time.monotonic() + grace_seconds
                while time.monotonic() < deadline:
                    time.sleep(STOP_POLL_SECONDS)
                    gang = self._gang(job_id, attempt)
                    if gang is None or not gang.live:
                        break
            if gang is not None:
                self._end(gang)
        finally:  # the grace is over (or the API failed): the poll's clean-up ends whatever is left
            self._silence(job_id, attempt)
            self._settle_logs([(job_id, attempt)])

    def poll(self) -> list[BackendEvent]:
        ended: list[tuple[str, int]] = []  # the attempts whose end this poll delivers
        with self._lock:
            events = self._poll(ended)
        # their logs' last parts, before the end is delivered; outside the lock, within a time limit: a
        # store that hangs must not hold up stop(), active() or launches
        self._settle_logs(ended)
        return events

    def _poll(self, ended: list[tuple[str, int]]) -> list[BackendEvent]:
        state = self._state()
        self._stops_overdue(state)
        for what, key in self._unacked:  # the loop handled last poll's events: acknowledge them
            if key not in state[what]:
                state[what].append(key)
        self._unacked = []
        gangs = self._gangs(state)
        events: list[BackendEvent] = []
        unacked: list[tuple[str, str]] = []  # kept only if this poll returns its events
        now = time.time()
        for gang in gangs:
            quiet = gang.key in state["stopped"] or gang.key in state["stopping"]
            if quiet or gang.key in state["reported"] or gang.stop_requested:
                self._clean_up(gang, state)
                continue
            event = gang.terminal_event(now)
            if event is not None:
                ended.append((gang.job_id, gang.attempt))
                events.append(event)
                unacked.append(("reported", gang.key))
            elif gang.all_running() and gang.key not in state["started"]:
                events.append(BackendEvent(EventKind.STARTED, gang.job_id, gang.attempt, now))
                unacked.append(("started", gang.key))
            elif self._agent_missing(gang, now):
                # a broken image or boot script: without an agent nothing would ever end these nodes
                events.append(BackendEvent(EventKind.FAILED, gang.job_id, gang.attempt, now, self.no_agent))
                unacked.append(("reported", gang.key))
        visible = {gang.key for gang in gangs}  # the APIs forget ended machines after a while
        for what in self.state_lists:
            state[what] = [key for key in state[what] if key in visible]
        state["stopping"] = {k: t for k, t in state["stopping"].items() if k in visible}
        self._save(state)
        # acknowledged by the next poll: a poll that raises (a clean-up's error, say) after some
        # outcomes were computed must not have them marked delivered, or the loop never gets them
        self._unacked = unacked
        return events

    def active(self) -> list[tuple[str, int]]:
        """Gangs with a live node, and ended or lost ones whose outcome has not been delivered yet."""
        with self._lock:
            state = self._state()
            done = set(state["stopped"]) | set(state["reported"]) | set(state["stopping"])
            return [
                (gang.job_id, gang.attempt)
                for gang in self._gangs(state)
                if gang.live or not (gang.key in done or gang.stop_requested)
            ]

    def redeliver(self) -> None:
        """The caller could not handle the last poll's events: the next poll reports them again."""
        with self._lock:
            self._unacked = []

    def _rollback_ids(
        self,
        request: LaunchRequest,
        exc: Exception,
        ids: list[str],
        answered: tuple[type[Exception], ...],
        id_of: Callable[[Any], str],
    ) -> list[str]:
        """What a launch that failed part-way terminates (no cloud here launches a gang all or nothing):
        ``ids`` (launched and already live), and, after an error the provider did not answer with
        (``answered``: its API errors; a timeout, say), what it lists for the gang: it may have made a rank
        whose call failed."""
        if not isinstance(exc, (*answered, CapacityError)):
            with contextlib.suppress(*answered, ProviderDown):
                found = self._gang(request.job_id, request.attempt)
                ids += [id_of(i) for i in (found.live if found else []) if id_of(i) not in ids]
        return ids

    # -- logs ---------------------------------------------------------------------------------------

    def log_path(
        self, job_id: str, attempt: int, node_rank: int, over: Callable[[], bool] | None = None
    ) -> Path | None:
        """The local copy of a node's log (``<home>/logs/<job>/<attempt>/node-<rank>.log``) brought up to
        date from the account's ``logs_url``; None without one, or when the node has uploaded nothing yet.
        With ``over`` (whether the attempt has ended; a follow's read only), the copy is kept up to date
        until it has."""
        if self._logs is None:
            return None
        # a running attempt's copy exists (empty) before its first part: a follow right after the start
        # waits for the output rather than finding nothing
        return self._logs.path(job_id, attempt, node_rank, over)

    def _settle_logs(self, attempts: list[tuple[str, int]]) -> None:
        if self._logs is not None and attempts:
            self._logs.settle(attempts)

    # -- local state --------------------------------------------------------------------------------

    def _silence(self, job_id: str, attempt: int, until: float | None = None) -> None:
        """No events for this gang any more: ``stopping`` until the wall-clock time ``until`` (a stop
        within its grace period), else ``stopped`` (stop's grace is over, or rolled back at launch)."""
        with self._lock:  # only the state file: polls and other stops go on while a stop waits
            state = self._state()
            key = gang_key(job_id, attempt)
            if until is not None:
                state["stopping"][key] = until
            else:
                state["stopping"].pop(key, None)
                if key not in state["stopped"]:
                    state["stopped"].append(key)
            self._save(state)

    def _stops_overdue(self, state: State) -> None:
        """A stopping gang whose stop() is long past its grace (the process died mid-stop) is stopped."""
        now = time.time()
        for key, until in list(state["stopping"].items()):
            if now > until:
                del state["stopping"][key]
                if key not in state["stopped"]:
                    state["stopped"].append(key)

    def _agent_missing(self, gang: Any, now: float) -> bool:
        since = gang.agent_missing_since()
        return since is not None and now - since > self.settings.agent_timeout_seconds

    def _state(self) -> State:
        try:
            found = json.loads((self.dir / "acked.json").read_text())
        except (OSError, ValueError):
            found = {}
        state: State = {what: list(found.get(what, [])) for what in self.state_lists}
        state["stopping"] = {str(k): float(t) for k, t in dict(found.get("stopping", {})).items()}
        return state | self._more_state(found)

    def _more_state(self, found: dict[str, Any]) -> State:
        """Hook: what a provider keeps in the state file beyond the lists of gang keys."""
        return {}

    def _save(self, state: State) -> None:
        write_json_atomic(self.dir / "acked.json", state)
