"""Jobs through the API: submit (JSON or YAML), list, show, cancel, events, logs; team isolation."""

from __future__ import annotations

import asyncio
import time

import httpx

from overcast.store import JobState
from tests.api.conftest import Api

SPEC = {"name": "train", "resources": {"accelerators": [{"name": "H100", "count": 8}]}, "num_nodes": 2}


def submit(api: Api, as_team: str, **extra: object) -> dict:
    resp = api.client.post("/v1/jobs", json={**SPEC, **extra}, headers=api.auth(as_team))
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_team_sees_and_touches_only_its_own_jobs(api_both: Api) -> None:
    api = api_both
    mine = submit(api, "ml")
    theirs = submit(api, "vision")
    listed = api.client.get("/v1/jobs", headers=api.auth("ml")).json()["jobs"]
    assert [j["id"] for j in listed] == [mine["id"]]
    for method, path in [
        ("GET", f"/v1/jobs/{theirs['id']}"),
        ("POST", f"/v1/jobs/{theirs['id']}/cancel"),
        ("GET", f"/v1/jobs/{theirs['id']}/logs"),
        ("GET", f"/v1/events?job_id={theirs['id']}"),
    ]:
        resp = api.client.request(method, path, headers=api.auth("ml"))
        assert resp.status_code == 404, (method, path)
        assert "not found" in resp.json()["detail"]
    assert api.store.get(theirs["id"]).state is JobState.PENDING  # the cancel did not touch it
    events = api.client.get("/v1/events", headers=api.auth("ml")).json()["events"]
    assert {e["job_id"] for e in events} == {mine["id"]}
    every = api.client.get("/v1/jobs", headers=api.auth("ops")).json()["jobs"]
    assert {j["id"] for j in every} == {mine["id"], theirs["id"]}


def test_submit_json_sets_owner_and_round_trips(api: Api) -> None:
    job = submit(api, "ml", team="vision", priority=7)
    assert (job["team"], job["state"], job["priority"], job["attempt"]) == ("ml", "pending", 7, 0)
    assert job["spec"]["resources"]["accelerators"] == [{"name": "H100", "count": 8}]
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.auth("ml")).json() == job
    on_behalf = submit(api, "ops", team="vision")  # an admin may submit for a team
    assert on_behalf["team"] == "vision"


def test_invalid_json_spec_is_422_naming_the_field(api: Api) -> None:
    resp = api.client.post("/v1/jobs", json={**SPEC, "num_nodes": 0}, headers=api.auth("ml"))
    assert resp.status_code == 422
    assert resp.json()["detail"] == "body.num_nodes: Input should be greater than or equal to 1"
    resp = api.client.post("/v1/jobs", json={"yaml": 5}, headers=api.auth("ml"))
    assert resp.json()["detail"] == "body.yaml: Input should be a valid string"  # not the JobSpec reading
    resp = api.client.post("/v1/jobs", json={"name": "a\x00b"}, headers=api.auth("ml"))
    assert resp.status_code == 422 and "spec contains a NUL" in resp.json()["detail"]


def test_yaml_submit_and_malformed_yaml_names_the_line(api: Api) -> None:
    good = "name: train\nresources:\n  accelerators: H100:8\nnum_nodes: 2\n"
    resp = api.client.post("/v1/jobs", json={"yaml": good}, headers=api.auth("ml"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["num_nodes"] == 2
    bad = "name: train\nresources:\n  accelerators: [H100:8\nnum_nodes: 2\n"
    resp = api.client.post("/v1/jobs", json={"yaml": bad}, headers=api.auth("ml"))
    assert resp.status_code == 422
    body = resp.json()
    assert body["line"] == 4  # the unclosed "[" makes the parser fail on the next line
    assert body["detail"].startswith("job.yaml:4: invalid YAML")
    resp = api.client.post("/v1/jobs", json={"yaml": "name: x\nnum_nodes: -1\n"}, headers=api.auth("ml"))
    assert resp.status_code == 422
    assert (resp.json()["line"], resp.json()["field"]) == (2, "num_nodes")
    deep = "name: x\nenv: " + "[" * 5000 + "]" * 5000
    resp = api.client.post("/v1/jobs", json={"yaml": deep}, headers=api.auth("ml"))
    assert resp.status_code == 422 and "nested too deeply" in resp.json()["detail"]


def test_oversized_body_is_413_before_it_is_parsed(api: Api) -> None:
    env = {f"K{i}": "v" * 100 for i in range(50_000)}  # about 5 MB
    resp = api.client.post("/v1/jobs", json={**SPEC, "env": env}, headers=api.auth("ml"))
    assert resp.status_code == 413 and "request body over" in resp.json()["detail"]
    chunked = (b"x" * 100_000 for _ in range(50))  # no Content-Length: counted as it arrives
    resp = api.client.post("/v1/jobs", content=chunked, headers=api.auth("ml"))
    assert resp.status_code == 413
    assert api.store.list() == []


def test_admin_may_submit_for_a_valid_team_name_only(api: Api) -> None:
    resp = api.client.post("/v1/jobs", json={**SPEC, "team": "has space"}, headers=api.auth("ops"))
    assert resp.status_code == 422 and resp.json()["field"] == "team"
    assert "invalid team name 'has space'" in resp.json()["detail"]
    assert api.store.list() == []


def test_list_filters_and_pages(api: Api) -> None:
    ids = [submit(api, "ml", name=f"j{i}")["id"] for i in range(4)]
    api.client.post(f"/v1/jobs/{ids[1]}/cancel", headers=api.auth("ml"))
    got = api.client.get("/v1/jobs?state=pending&limit=2&offset=1", headers=api.auth("ml")).json()
    assert [j["id"] for j in got["jobs"]] == [ids[2], ids[3]]
    assert api.client.get("/v1/jobs?limit=0", headers=api.auth("ml")).status_code == 422
    assert api.client.get("/v1/jobs?state=bogus", headers=api.auth("ml")).status_code == 422


def test_cancel_and_events_timeline(api: Api) -> None:
    job = submit(api, "ml")
    resp = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.auth("ml"))
    assert resp.json()["state"] == "cancelled"
    timeline = api.client.get(f"/v1/events?job_id={job['id']}", headers=api.auth("ml")).json()
    assert [e["kind"] for e in timeline["events"]] == ["submitted", "cancel-requested", "cancelled"]
    newer = api.client.get(f"/v1/events?after={timeline['last_id']}", headers=api.auth("ml")).json()
    assert newer == {"events": [], "last_id": timeline["last_id"]}


def test_logs_read_and_follow_until_the_attempt_ends(api: Api) -> None:
    job = submit(api, "ml")
    assert api.client.get(f"/v1/jobs/{job['id']}/logs", headers=api.auth("ml")).status_code == 404
    api.store.transition(job["id"], [JobState.PENDING], JobState.RUNNING, attempt=1)
    log = api.controller.log_dir / job["id"] / "1" / "rank0.log"
    log.parent.mkdir(parents=True)
    log.write_text("step 1\nstep 2\n")
    resp = api.client.get(f"/v1/jobs/{job['id']}/logs", headers=api.auth("ml"))
    assert resp.status_code == 200 and resp.text == "step 1\nstep 2\n"
    api.store.transition(job["id"], [JobState.RUNNING], JobState.SUCCEEDED)
    with log.open("a") as f:
        f.write("done\n")
    followed = api.client.get(f"/v1/jobs/{job['id']}/logs?follow=true&rank=0", headers=api.auth("ml"))
    assert followed.text.endswith("done\n")
    assert api.client.get(f"/v1/jobs/{job['id']}/logs?rank=3", headers=api.auth("ml")).status_code == 404


def test_text_no_database_can_store_is_422_on_both(api_both: Api) -> None:
    api = api_both
    for body in ({"name": "a\x00b"}, {"name": "ok", "env": {"K": "v\x00"}}, {"yaml": "name: a\x00"}):
        resp = api.client.post("/v1/jobs", json=body, headers=api.auth("ml"))
        assert resp.status_code == 422, body
        assert "NUL" in resp.json()["detail"]
    assert api.client.get("/v1/events?job_id=j-%00", headers=api.auth("ml")).status_code == 422
    assert api.client.get("/v1/jobs/j-%00", headers=api.auth("ml")).status_code == 422
    assert api.store.list() == []


def test_admin_submits_only_for_a_team_that_exists(api: Api) -> None:
    for body in ({**SPEC, "team": "mll"}, {"yaml": "name: a\nrun: x\nteam: mll\n"}):  # a typo of ml
        resp = api.client.post("/v1/jobs", json=body, headers=api.auth("ops"))
        assert resp.status_code == 422 and resp.json()["field"] == "team", resp.text
        assert "no team 'mll'" in resp.json()["detail"] and "create-team mll" in resp.json()["detail"]
    assert api.store.list() == []
    assert submit(api, "ops")["team"] == "ops"  # no team in the spec ("default"): the admin's own


def test_a_big_spec_is_parsed_off_the_event_loop(api: Api) -> None:
    """/healthz answers while another client's long spec is parsed (a few seconds of CPU: long enough
    that a loaded machine's scheduling hiccups stay a small part of it)."""
    text = "name: a\nrun: x\nx-pad: [" + ",".join(["[[[[1]]]]"] * 12000) + "]\n"  # 120 KB

    async def main() -> tuple[float, float]:
        transport = httpx.ASGITransport(app=api.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            submitted = asyncio.create_task(
                client.post("/v1/jobs", json={"yaml": text}, headers=api.auth("ml"), timeout=None)
            )
            worst, start = 0.0, time.monotonic()
            last = start
            while not submitted.done():
                assert (await client.get("/healthz")).status_code == 200
                now = time.monotonic()
                worst, last = max(worst, now - last), now
            resp = await submitted
            assert resp.status_code == 422 and resp.json()["field"] == "x-pad", resp.text  # from the thread
            return worst, time.monotonic() - start

    worst, took = asyncio.run(main())  # on the loop, /healthz would wait for all of it
    assert worst < took / 2, f"/healthz went unanswered for {worst:.2f} s of the submit's {took:.2f} s"
    script = "\n".join(f"  echo step {i}" for i in range(300))  # a long, valid spec: parsed in a thread
    resp = api.client.post("/v1/jobs", json={"yaml": f"name: a\nrun: |\n{script}\n"}, headers=api.auth("ml"))
    assert resp.status_code == 201 and resp.json()["spec"]["run"].count("echo") == 300


def test_yaml_submit_with_launch_env_overrides_the_files_and_bad_names_are_422(api: Api) -> None:
    text = "name: a\nenv: {A: file, T: null}\n"
    body = {"yaml": text, "env": {"A": "cli", "T": "x"}}
    resp = api.client.post("/v1/jobs", json=body, headers=api.auth("ml"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["env"] == {"A": "cli", "T": "x"}
    events = api.client.get("/v1/events", params={"job_id": resp.json()["id"]}, headers=api.auth("ml")).json()
    assert not [e for e in events["events"] if e["kind"] == "spec-warning"]  # T was given
    for env in ({"1BAD": "x"}, {"A": 1}, {f"V{i}": "x" for i in range(1001)}):
        resp = api.client.post("/v1/jobs", json={"yaml": text, "env": env}, headers=api.auth("ml"))
        assert resp.status_code == 422, (env if len(env) < 5 else len(env), resp.text)


def test_yaml_text_is_capped_at_200000_characters(api: Api) -> None:
    resp = api.client.post("/v1/jobs", json={"yaml": "#" * 200_001}, headers=api.auth("ml"))
    assert resp.status_code == 422
    assert resp.json()["detail"] == "body.yaml: String should have at most 200000 characters"
