"""Services in the store (SQLite and PostgreSQL): put creates or changes, names per team, deletion."""

from __future__ import annotations

import threading

from sqlalchemy import inspect

from overcast.spec.models import ServiceSpec
from overcast.store import Store


def test_put_creates_then_versions_changes_only(store_url: str) -> None:
    store = Store(store_url)
    try:
        created, new = store.put_service("ml", ServiceSpec(name="llm"))
        assert new and created.version == 1 and created.state == "active" and created.id.startswith("s-")
        assert created.spec.team == "ml"  # the owner is the caller's team, whatever the spec said
        same, new = store.put_service("ml", ServiceSpec(name="llm"))
        assert not new and same.version == 1 and same.id == created.id
        changed, _ = store.put_service("ml", ServiceSpec(name="llm", env={"MODEL": "v2"}))
        assert changed.version == 2 and changed.spec.env == {"MODEL": "v2"}
        other, new = store.put_service("vision", ServiceSpec(name="llm"))  # names are per team
        assert new and other.id != created.id
        assert [s.id for s in store.services(team="ml")] == [created.id]
        assert [s.id for s in store.services(name="llm")] == [created.id, other.id]
        assert "uq_services_team_name" in {
            c["name"] for c in inspect(store.engine).get_unique_constraints("services")
        }
    finally:
        store.close()


def test_delete_waits_for_the_controller_and_a_put_revives(store_url: str) -> None:
    store = Store(store_url)
    try:
        svc, _ = store.put_service("ml", ServiceSpec(name="llm"))
        assert not store.delete_service(svc.id)  # only a service marked for deletion is removed
        assert store.request_service_delete(svc.id).state == "deleting"
        revived, _ = store.put_service("ml", ServiceSpec(name="llm"))
        assert revived.state == "active" and revived.version == 1  # same spec, back to active
        assert not store.delete_service(svc.id)  # the supervisor's removal loses to the new put
        store.request_service_delete(svc.id)
        store.set_service_status(svc.id, {"ready": 2}, lb_port=8781)
        assert store.service(svc.id).status == {"ready": 2} and store.service(svc.id).lb_port == 8781
        assert store.delete_service(svc.id) and store.service(svc.id) is None
        assert store.request_service_delete(svc.id) is None
    finally:
        store.close()


def test_concurrent_creates_of_one_name_make_one_service(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(4)]
    ids: list[str] = []
    try:
        threads = [
            threading.Thread(target=lambda s=s: ids.append(s.put_service("ml", ServiceSpec(name="x"))[0].id))
            for s in stores
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(ids) == 4 and len(set(ids)) == 1
    finally:
        for s in stores:
            s.close()
