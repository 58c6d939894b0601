"""Migrations on a fresh database, database URLs, and tokens hashed at rest."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from overcast.store import Store, StoreConfigError, StoreUnavailable, migrate
from overcast.store.engine import default_url


def test_migrations_create_the_schema_at_head(store_url: str) -> None:
    store = Store(store_url)
    try:
        tables = set(inspect(store.engine).get_table_names())
        assert {"teams", "tokens", "jobs", "events", "launches", "pool_health", "leases"} <= tables
        head = migrate.alembic_config()
        from alembic.script import ScriptDirectory

        assert migrate.current_revision(store.engine) == ScriptDirectory.from_config(head).get_current_head()
        Store(store_url).close()  # reopening an up-to-date database is a no-op
    finally:
        store.close()


def test_a_database_at_the_first_revision_upgrades_with_its_data(store_url: str) -> None:
    from overcast.spec.models import JobSpec
    from overcast.store.engine import make_engine

    engine = make_engine(store_url)
    migrate.upgrade(engine, "0001")
    engine.dispose()
    old = Store(store_url)  # at head now
    job = old.submit("ml", JobSpec(name="kept"))
    old.close()
    store = Store(store_url)
    try:
        assert store.get(job.id).name == "kept"
        assert {"ix_events_team_id", "ix_events_job_id_id"} <= {
            ix["name"] for ix in inspect(store.engine).get_indexes("events")
        }
    finally:
        store.close()


def test_tokens_are_hashed_at_rest(store_url: str) -> None:
    store = Store(store_url)
    try:
        token = store.create_team("ml")
        admin = store.create_team("ops", admin=True)
        second = store.create_team("ml")  # a second token for the same team
        assert store.team_for_token(token) == ("ml", False)
        assert store.team_for_token(second) == ("ml", False)
        assert store.team_for_token(admin) == ("ops", True)
        with store.engine.connect() as conn:
            stored = " ".join(str(v) for row in conn.execute(text("SELECT * FROM tokens")) for v in row)
        for plain in (token, second, admin):
            assert plain not in stored and plain.split("_", 2)[2] not in stored
        assert store.team_for_token(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
        assert store.team_for_token("") is None
        assert store.team_for_token("not-a-token") is None
    finally:
        store.close()


def test_database_errors_do_not_carry_parameters(store_url: str) -> None:
    """Errors end up in logs; their parameters would be job specs with secrets in env."""
    store = Store(store_url)
    try:
        with pytest.raises(Exception) as caught, store.engine.connect() as conn:
            conn.execute(text("SELECT no_such_column FROM jobs WHERE name = :n"), {"n": "hunter2-secret"})
        assert "no_such_column" in str(caught.value) and "hunter2-secret" not in str(caught.value)
    finally:
        store.close()


def test_bad_team_name_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError, match="invalid team name"):
        store.create_team("has space")


def test_default_url_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OVERCAST_DATABASE_URL", raising=False)
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "home"))
    assert default_url() == f"sqlite:///{tmp_path / 'home' / 'overcast.db'}"
    store = Store()
    assert (tmp_path / "home" / "overcast.db").exists()
    store.close()
    monkeypatch.setenv("OVERCAST_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert default_url() == "postgresql+psycopg://u@h/db"


def test_unsupported_url_is_a_clear_error() -> None:
    with pytest.raises(StoreConfigError, match="unsupported database 'mysql'"):
        Store("mysql://u@h/db")
    with pytest.raises(StoreConfigError, match="invalid database URL"):
        Store("::not a url::")


def test_unreachable_database_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures.postgres import free_port

    with pytest.raises(StoreUnavailable, match=r"cannot open the database postgresql\+psycopg://u:\*\*\*@"):
        Store(f"postgresql+psycopg://u:secret@127.0.0.1:{free_port()}/db")
    with pytest.raises(StoreUnavailable, match="cannot open the database"):
        Store(f"sqlite:///{tmp_path}")  # a directory, not a file
