"""An app over a real store (SQLite file), three teams' tokens, and a small in-memory controller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from overcast.api.app import create_app
from overcast.store import Store


@dataclass
class RecordingController:
    """Implements overcast.api.controller.Controller over a dict of providers and a log directory."""

    log_dir: Path
    providers_up: dict[str, bool] = field(default_factory=lambda: {"oci": True, "azure": True})
    calls: list[tuple[str, str, str | None, float | None]] = field(default_factory=list)

    def chaos(self, provider: str, action: str, *, job_id: str | None, duration_s: float | None) -> str:
        if provider not in self.providers_up:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(sorted(self.providers_up))}")
        self.calls.append((provider, action, job_id, duration_s))
        if action in ("down", "up"):
            self.providers_up[provider] = action == "up"
        return f"{provider}: {action}"

    def pools(self) -> list[dict[str, Any]]:
        return [
            {"id": f"{p}/r1/gpu8/on-demand", "provider": p, "region": "r1", "accelerator": "H100",
             "purchase": "on-demand", "capacity": 4, "used": 0, "health": "ok" if up else "down",
             "until": None, "price": 30.0}
            for p, up in self.providers_up.items()
        ]  # fmt: skip

    def providers(self) -> list[dict[str, Any]]:
        return [{"name": p, "up": up} for p, up in self.providers_up.items()]

    def log_path(self, job_id: str, attempt: int, rank: int, follow: bool = False) -> Path | None:
        path = self.log_dir / job_id / str(attempt) / f"rank{rank}.log"
        return path if path.exists() else None


@dataclass
class Api:
    client: TestClient
    store: Store
    controller: RecordingController
    tokens: dict[str, str]

    def auth(self, team: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[team]}"}


def make_api(url: str, tmp_path: Path) -> Iterator[Api]:
    store = Store(url)
    controller = RecordingController(tmp_path / "logs")
    tokens = {"ml": store.create_team("ml"), "vision": store.create_team("vision")}
    tokens["ops"] = store.create_team("ops", admin=True)
    with TestClient(create_app(store, controller)) as client:
        yield Api(client, store, controller, tokens)
    store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(f"sqlite:///{tmp_path / 'api.db'}", tmp_path)


@pytest.fixture
def api_both(store_url: str, tmp_path: Path) -> Iterator[Api]:
    """The same, once on SQLite and once on PostgreSQL."""
    yield from make_api(store_url, tmp_path)
