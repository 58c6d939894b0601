"""A SQLite database locked by another writer past the busy timeout: 503 (retryable), never a 500, and
/healthz does not wait for the write lock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import overcast.store.engine as engine
from tests.api.conftest import Api, make_api


@pytest.fixture
def locked_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, TestClient]]:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.5)
    api = next(make_api(f"sqlite:///{tmp_path / 'api.db'}", tmp_path))
    api.client.get("/v1/jobs", headers=api.auth("ml"))  # the token is cached from here on
    other = sqlite3.connect(tmp_path / "api.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    yield api, TestClient(api.client.app, raise_server_exceptions=False)
    other.execute("COMMIT")
    other.close()


def test_a_write_past_the_busy_timeout_is_a_503_and_healthz_still_answers(locked_api) -> None:  # type: ignore[no-untyped-def]
    api, client = locked_api
    resp = client.post("/v1/jobs", json={"name": "a", "run": "true"}, headers=api.auth("ml"))
    assert resp.status_code == 503 and "retry later" in resp.json()["detail"]
    assert client.get("/healthz").status_code == 200  # a read: WAL readers never wait for writers
    assert client.get("/v1/jobs", headers=api.auth("ml")).status_code == 200
