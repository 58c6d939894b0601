"""The store's services (overcast.serve): put (create or change), list, look up, delete, status.

A mixin of ``Store``: the same one-short-transaction-per-method rule. The API writes the spec; the
server's service supervisor reads it, writes the status and removes a row once its replicas are stopped.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from overcast.spec.models import ServiceSpec
from overcast.store.records import ServiceRecord, service_record
from overcast.store.tables import services

_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
ACTIVE, DELETING = "active", "deleting"


def new_service_id() -> str:
    """ "s-" and 10 random characters; a replica launch is named ``svc.<id>.<rid>`` after it."""
    return "s-" + "".join(_ID_ALPHABET[b & 31] for b in secrets.token_bytes(10))


class ServiceMethods:
    clock: Callable[[], float]
    _write: Callable[[], AbstractContextManager[Connection]]
    _read: Callable[[], AbstractContextManager[Connection]]

    def put_service(self, team: str, spec: ServiceSpec) -> tuple[ServiceRecord, bool]:
        """Create the team's service of this name, or change its spec (version + 1; a service being
        deleted becomes active again). Returns (record, created). The same spec again changes nothing."""
        if spec.team != team:
            spec = spec.model_copy(update={"team": team})
        text = spec.model_dump_json()
        for _ in range(2):  # a concurrent create of the same name: the loser updates instead
            try:
                return self._put(team, spec.name, text)
            except IntegrityError:
                continue
        return self._put(team, spec.name, text)

    def _put(self, team: str, name: str, text: str) -> tuple[ServiceRecord, bool]:
        now = self.clock()
        where = (services.c.team == team, services.c.name == name)
        with self._write() as conn:
            row = conn.execute(select(services).where(*where).with_for_update()).first()
            if row is None:
                values = {
                    "id": new_service_id(), "team": team, "name": name, "spec": text, "version": 1,
                    "state": ACTIVE, "lb_port": None, "status": "{}", "submitted_at": now, "updated_at": now,
                }  # fmt: skip
                conn.execute(insert(services).values(values))
                return service_record(values), True
            if row.spec != text or row.state != ACTIVE:
                version = row.version + (row.spec != text)
                changes = {"spec": text, "version": version, "state": ACTIVE, "updated_at": now}
                conn.execute(update(services).where(services.c.id == row.id).values(changes))
            fresh = conn.execute(select(services).where(services.c.id == row.id)).one()
        return service_record(fresh), False

    def services(self, *, team: str | None = None, name: str | None = None) -> list[ServiceRecord]:
        """Services oldest first; ``team`` None: every team's (admin view)."""
        query = select(services).order_by(services.c.submitted_at, services.c.id)
        if team is not None:
            query = query.where(services.c.team == team)
        if name is not None:
            query = query.where(services.c.name == name)
        with self._read() as conn:
            return [service_record(row) for row in conn.execute(query)]

    def service(self, service_id: str) -> ServiceRecord | None:
        with self._read() as conn:
            row = conn.execute(select(services).where(services.c.id == service_id)).first()
        return None if row is None else service_record(row)

    def request_service_delete(self, service_id: str) -> ServiceRecord | None:
        """Mark the service for deletion: its controller stops every replica, then removes the row."""
        with self._write() as conn:
            conn.execute(
                update(services)
                .where(services.c.id == service_id)
                .values(state=DELETING, updated_at=self.clock())
            )
            row = conn.execute(select(services).where(services.c.id == service_id)).first()
        return None if row is None else service_record(row)

    def delete_service(self, service_id: str) -> bool:
        """Remove a service marked for deletion (not one put again meanwhile): True if it was removed."""
        with self._write() as conn:
            gone = conn.execute(
                delete(services).where(services.c.id == service_id, services.c.state == DELETING)
            )
        return gone.rowcount == 1

    def set_service_status(self, service_id: str, status: dict[str, Any], *, lb_port: int | None) -> None:
        values = {"status": json.dumps(status), "lb_port": lb_port, "updated_at": self.clock()}
        with self._write() as conn:
            conn.execute(update(services).where(services.c.id == service_id).values(values))
