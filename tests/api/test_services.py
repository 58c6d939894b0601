"""/v1/services over SQLite and PostgreSQL: put, list, show, delete, team isolation, bad input as 422."""

from __future__ import annotations

from tests.api.conftest import Api

SERVICE = """\
kind: service
name: llm
service:
  readiness_probe: /health
  replicas: 2
run: python serve.py
"""


def test_put_list_show_delete(api_both: Api) -> None:
    api = api_both
    r = api.client.post("/v1/services", json={"yaml": SERVICE}, headers=api.auth("ml"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "llm" and body["team"] == "ml" and body["version"] == 1
    assert body["spec"]["replicas"]["min_replicas"] == 2 and body["state"] == "active"
    again = api.client.post("/v1/services", json={"yaml": SERVICE}, headers=api.auth("ml"))
    assert again.status_code == 200 and again.json()["version"] == 1  # same spec: nothing to roll
    changed = SERVICE.replace("replicas: 2", "replicas: 3")
    r = api.client.post("/v1/services", json={"yaml": changed}, headers=api.auth("ml"))
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["id"] == body["id"]
    listed = api.client.get("/v1/services", headers=api.auth("ml")).json()["services"]
    assert [s["id"] for s in listed] == [body["id"]]
    shown = api.client.get("/v1/services/llm", headers=api.auth("ml"))
    assert shown.status_code == 200 and shown.json()["spec"]["replicas"]["min_replicas"] == 3
    gone = api.client.delete("/v1/services/llm", headers=api.auth("ml"))
    assert gone.status_code == 202 and gone.json()["state"] == "deleting"
    assert api.store.services(team="ml")[0].state == "deleting"  # the supervisor removes it once stopped


def test_another_teams_service_is_a_404(api_both: Api) -> None:
    api = api_both
    assert api.client.post("/v1/services", json={"yaml": SERVICE}, headers=api.auth("ml")).status_code == 201
    assert api.client.get("/v1/services/llm", headers=api.auth("vision")).status_code == 404
    assert api.client.delete("/v1/services/llm", headers=api.auth("vision")).status_code == 404
    assert api.client.get("/v1/services/llm?team=ml", headers=api.auth("vision")).status_code == 404
    assert api.client.get("/v1/services", headers=api.auth("vision")).json()["services"] == []
    assert api.store.services(team="ml")[0].state == "active"
    # vision's own "llm" is another service; the admin sees both and must say which
    assert (
        api.client.post("/v1/services", json={"yaml": SERVICE}, headers=api.auth("vision")).status_code == 201
    )
    assert len(api.client.get("/v1/services", headers=api.auth("ops")).json()["services"]) == 2
    assert api.client.get("/v1/services/llm", headers=api.auth("ops")).status_code == 409
    admin_view = api.client.get("/v1/services/llm?team=vision", headers=api.auth("ops"))
    assert admin_view.status_code == 200 and admin_view.json()["team"] == "vision"
    assert api.client.get("/v1/services/llm", headers=api.auth("ml")).json()["team"] == "ml"
    assert api.client.get("/v1/services").status_code == 401


def test_bad_input_is_a_422_with_field_and_line(api_both: Api) -> None:
    api = api_both
    cases = {
        SERVICE.replace("replicas: 2", "replicas: -1"): ("service.replicas", 5),
        SERVICE.replace("name: llm", "name: llm/7b"): ("name", 2),
        SERVICE.replace("readiness_probe: /health", "readiness_probe: {path: /h, nope: 1}"): (
            "service.readiness_probe.nope",
            4,
        ),
        "kind: service\nname: x\nservice: [\n": (None, 4),
        "name: a-job\nrun: echo hi\n": ("service", None),
    }
    for text, (field, line) in cases.items():
        r = api.client.post("/v1/services", json={"yaml": text}, headers=api.auth("ml"))
        assert r.status_code == 422, (text, r.text)
        body = r.json()
        if field is not None:
            assert body["field"] == field, body
        if line is not None:
            assert body["line"] == line, body
    r = api.client.post("/v1/services", json={"yaml": "name: x\x00"}, headers=api.auth("ml"))
    assert r.status_code == 422
    r = api.client.post("/v1/services", json={"name": "llm"}, headers=api.auth("ml"))  # not YAML text
    assert r.status_code == 422 and "yaml" in r.json()["detail"]
    assert api.client.get("/v1/services/bad%2Fname", headers=api.auth("ml")).status_code in (404, 422)
    assert api.store.services() == []


def test_admin_puts_a_service_only_for_a_team_that_exists(api: Api) -> None:
    r = api.client.post("/v1/services", json={"yaml": SERVICE + "team: mll\n"}, headers=api.auth("ops"))
    assert r.status_code == 422 and r.json()["field"] == "team", r.text
    assert "no team 'mll'" in r.json()["detail"] and "create-team mll" in r.json()["detail"]
    assert api.store.services() == []
    r = api.client.post("/v1/services", json={"yaml": SERVICE + "team: vision\n"}, headers=api.auth("ops"))
    assert r.status_code == 201 and r.json()["team"] == "vision"


def test_a_long_spec_is_checked_in_a_thread_as_a_short_one(api: Api) -> None:
    long = "# " + "x" * 3000 + "\n" + SERVICE.replace("name: llm", "name: llm/7b")  # over INLINE_CHARS
    r = api.client.post("/v1/services", json={"yaml": long}, headers=api.auth("ml"))
    assert r.status_code == 422 and (r.json()["field"], r.json()["line"]) == ("name", 3), r.text
