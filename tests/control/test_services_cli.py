"""`overcast services list | show | delete` over the real API app (in-process) and a real store: the table,
a team's own view, an admin's ?team=, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from overcast.api.app import create_app
from overcast.cli import jobs as cli_jobs
from overcast.cli.main import app
from overcast.control.client import ApiClient
from overcast.spec.models import ServiceSpec
from overcast.store import Store


def _spec(team: str) -> ServiceSpec:
    return ServiceSpec(name="llm", team=team, run="python -m http.server $OVERCAST_REPLICA_PORT")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Store, dict[str, str]]]:
    """Teams ml and vision each with a service "llm"; ml's reported by its controller, vision's not yet."""
    store = Store(f"sqlite:///{tmp_path / 'api.db'}")
    tokens = {"ml": store.create_team("ml"), "vision": store.create_team("vision")}
    tokens["ops"] = store.create_team("ops", admin=True)
    ml, _ = store.put_service("ml", _spec("ml"))
    store.put_service("vision", _spec("vision"))
    replicas = [
        {"id": 1, "provider": "azure-local", "pool": "local/azure-local", "state": "ready", "version": 1,
         "fallback": False, "url": "http://127.0.0.1:9001", "unjudged": False},
        {"id": 2, "provider": "oci-local", "pool": "local/oci-local", "state": "provisioning", "version": 1,
         "fallback": True, "url": None, "unjudged": False},
    ]  # fmt: skip
    status = {"target": 2, "ready": 1, "version": 1, "replicas": replicas, "url": "http://127.0.0.1:8780"}
    store.set_service_status(ml.id, status, lb_port=8780)
    current = tokens | {"token": tokens["ml"]}

    def client() -> ApiClient:
        api = ApiClient(url="http://testserver", token=current["token"])
        api.http = TestClient(create_app(store), headers={"Authorization": f"Bearer {current['token']}"})
        return api

    monkeypatch.setattr(cli_jobs, "_client", client)
    yield store, current
    store.close()


def _run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["services", *args], env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def _rows(out: str) -> list[list[str]]:
    out = out.replace("┃", "│")
    return [[c.strip() for c in line.strip("│").split("│")] for line in out.splitlines() if "│" in line]


def test_a_team_lists_and_shows_only_its_own(world: tuple[Store, dict[str, str]]) -> None:
    rows = _rows(_run("list"))
    assert rows[0] == ["service", "team", "version", "state", "ready", "url"]
    assert rows[1:] == [["llm", "ml", "1", "active", "1/2", "http://127.0.0.1:8780"]]
    out = _run("show", "llm")
    assert out.startswith("service llm (team ml) version 1, active; ready 1/2; url http://127.0.0.1:8780\n")
    replicas = _rows(out)
    assert replicas[1] == ["1", "1", "ready", "azure-local", "local/azure-local", "http://127.0.0.1:9001"]
    assert replicas[2] == ["2", "1", "provisioning (fallback)", "oci-local", "local/oci-local", "-"]
    assert json.loads(_run("show", "llm", "--json"))["team"] == "ml"
    assert "not found" in _run("show", "nope", code=1)


def test_an_admin_sees_every_team_and_names_one(world: tuple[Store, dict[str, str]]) -> None:
    _store, tokens = world
    tokens["token"] = tokens["ops"]
    rows = _rows(_run("list"))
    assert sorted((r[0], r[1], r[4]) for r in rows[1:]) == [("llm", "ml", "1/2"), ("llm", "vision", "-")]
    assert "pass ?team=" in _run("show", "llm", code=1)  # two teams use the name
    assert _run("show", "llm", "--team", "vision").startswith("service llm (team vision) version 1, active")


def test_delete_marks_the_service_and_another_team_cannot(world: tuple[Store, dict[str, str]]) -> None:
    store, tokens = world
    tokens["token"] = tokens["vision"]
    assert "not found" in _run("delete", "nope", code=1)
    out = _run("delete", "llm")
    assert out == "service llm (team vision): deleting; its replicas are being stopped\n"
    states = {s.team: s.state for s in store.services(team=None)}
    assert states == {"ml": "active", "vision": "deleting"}  # ml's, of the same name, untouched
    tokens["token"] = tokens["ml"]
    assert _rows(_run("list"))[1][3] == "active"


def test_no_services_says_so(world: tuple[Store, dict[str, str]]) -> None:
    store, tokens = world
    tokens["token"] = store.create_team("empty")
    assert _run("list") == "no services\n"
