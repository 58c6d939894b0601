"""Database URL resolution and engine creation (SQLite by default, PostgreSQL for production)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_S = 30.0


class StoreConfigError(ValueError):
    """The database URL is malformed or names a database we do not support."""


class StoreUnavailable(RuntimeError):
    """The database could not be reached or opened."""


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid URL>"


def overcast_home() -> Path:
    return Path(os.environ.get("OVERCAST_HOME") or Path.home() / ".overcast").expanduser()


def default_url() -> str:
    """OVERCAST_DATABASE_URL, else the SQLite file $OVERCAST_HOME/overcast.db."""
    url = os.environ.get("OVERCAST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{overcast_home() / 'overcast.db'}"


def make_engine(url: str) -> Engine:
    """An engine for ``url``. Its errors never carry the statement's parameters (hide_parameters):
    those hold job specs with their environment, and errors end up in logs."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise StoreConfigError(f"invalid database URL {safe_url(url)}: {type(exc).__name__}") from None
    if parsed.drivername in ("postgres", "postgresql"):  # Heroku-style postgres://; bare postgresql://
        parsed = parsed.set(drivername="postgresql+psycopg")  # would pick psycopg2; we ship psycopg 3
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, parsed.database)
    if backend == "postgresql":
        return create_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True)
    raise StoreConfigError(
        f"unsupported database {backend!r} in {safe_url(url)}: use sqlite:/// or postgresql+psycopg://"
    )


def is_in_memory(engine: Engine) -> bool:
    """An in-memory SQLite database: one connection that every thread shares."""
    return engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")


def _set_wal(cursor) -> None:  # type: ignore[no-untyped-def]
    """Switch to WAL. Several processes opening a fresh database at once can get "database is locked"
    here without SQLite's busy handler being consulted, so retry for up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_engine(url: str, database: str | None) -> Engine:
    in_memory = not database or database == ":memory:"
    if in_memory:
        # One shared connection, otherwise every pooled connection would see its own empty database.
        engine = create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}, hide_parameters=True
        )
    else:
        folder = Path(database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreUnavailable(f"cannot create the database folder {folder}: {err.strerror}") from None
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            pool_size=8,
            max_overflow=16,
            hide_parameters=True,
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Take over transaction control from pysqlite so that "begin" below decides how to BEGIN.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if not in_memory:
            _set_wal(cursor)  # readers never block the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Writers take the lock up front (BEGIN IMMEDIATE) so a read-then-write transaction never
        # fails with "database is locked" halfway; plain readers use a deferred BEGIN.
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        try:
            conn.connection.driver_connection.execute(f"BEGIN {mode}")  # no SQLAlchemy round: hot path
        except sqlite3.OperationalError as err:  # locked past the busy timeout: SQLAlchemy's own error
            raise OperationalError(f"BEGIN {mode}", None, err) from None

    return engine
