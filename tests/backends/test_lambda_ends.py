"""How the nodes of a Lambda gang end, against the fake API and VM host: ranks that end at different
times, API errors while an agent waits or terminates its instance, and where the API key may be sent.

A rank whose job ends long before rank 0's must not read as a lost node: Lambda forgets terminated
instances soon, so the backend records each rank's exit the first time a poll sees it (in its local
state, kept across a restart), and an ended node does not terminate itself while another rank of its gang
still runs (for a controller that is down)."""

from __future__ import annotations

from pathlib import Path

import pytest

from overcast.backends import lambda_agent
from overcast.backends.base import EventKind, LaunchRequest
from overcast.backends.lambda_client import LambdaApi, LambdaSettings, RateLimited
from overcast.backends.lambda_cloud import LambdaBackend
from tests.backends.cloud_checks import eventually, wait_events
from tests.backends.lambda_vm import LambdaVmHost
from tests.backends.test_lambda import gpu_job, key_file, pool_of, settings, vms  # noqa: F401 (fixtures)
from tests.fixtures.lambda_fake import KEY, FakeLambda, lambda_fake, lambda_server  # noqa: F401

TERMINAL = (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.PREEMPTED)


def uneven(flag: Path) -> str:
    """Rank 0 runs until ``flag`` exists; rank 1 ends at once."""
    return f'if [ "$OVERCAST_NODE_RANK" = 0 ]; then while [ ! -e {flag} ]; do sleep 0.05; done; fi; echo done'


def rank(host: LambdaVmHost, job: str, n: int) -> dict:
    return next(i for i in host.instances(job=job) if i["tagmap"]["overcast-rank"] == str(n))


def outcome(backend: LambdaBackend, timeout: float = 20.0) -> list:
    events = wait_events(backend, lambda seen: any(e.kind in TERMINAL for e in seen), timeout)
    return [(e.kind, e.detail) for e in events if e.kind in TERMINAL]


def test_a_rank_that_ended_early_and_was_forgotten_is_not_a_lost_node(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,  # noqa: F811
    vms: LambdaVmHost,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = LambdaBackend(settings(lambda_fake, key_file), home=tmp_path)
    flag = tmp_path / "rank0-may-end"
    backend.launch(LaunchRequest("u", 1, pool_of(backend), 2, gpu_job("u", uneven(flag))))
    assert eventually(lambda: "overcast-exit" in rank(vms, "u", 1)["tagmap"], 15)
    head = rank(vms, "u", 0)["id"]
    assert eventually(lambda: "is rank 0 of 2" in vms.console(head), 15)  # rank 0's job runs
    assert [e.kind for e in backend.poll()] == [EventKind.STARTED]  # this poll reads rank 1's exit
    # rank 1's instance goes (its linger ran out, a console click) and Lambda forgets it
    gone = rank(vms, "u", 1)["id"]
    lambda_fake.terminate(gone)
    assert eventually(lambda: all(i.data["id"] != gone for i in lambda_fake.listed()), 10)
    assert backend.poll() == []  # rank 0 still runs: no outcome, and above all not a lost node
    # the record survives a restart of the controller: a new backend over the same home
    backend = LambdaBackend(settings(lambda_fake, key_file), home=tmp_path)
    assert backend.poll() == []
    flag.touch()
    assert outcome(backend) == [(EventKind.SUCCEEDED, "")]
    assert eventually(lambda: backend.poll() == [] and backend.active() == [], 10)


def test_an_ended_node_outlives_its_linger_while_another_rank_of_its_gang_runs(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,  # noqa: F811
    vms: LambdaVmHost,  # noqa: F811
    tmp_path: Path,
) -> None:
    # the controller is down (nothing polls) while rank 1 ends and rank 0 runs past rank 1's linger
    conf = settings(lambda_fake, key_file, agent_linger_seconds=5.0)
    backend = LambdaBackend(conf, home=tmp_path)
    flag = tmp_path / "rank0-may-end"
    backend.launch(LaunchRequest("w", 1, pool_of(backend), 2, gpu_job("w", uneven(flag))))
    early = rank(vms, "w", 1)["id"]
    waits = "linger over, but rank 0 runs: this node waits for its gang"
    assert eventually(lambda: waits in vms.console(early), 30), vms.console(early)
    assert rank(vms, "w", 1)["status"] == "active"
    flag.touch()
    assert eventually(lambda: "overcast-exit" in rank(vms, "w", 0)["tagmap"], 10)
    # the controller is back: both exits are still there to read (rank 1 waits out a linger after it)
    backend = LambdaBackend(conf, home=tmp_path)
    assert outcome(backend) == [(EventKind.SUCCEEDED, "")]
    assert eventually(lambda: backend.poll() == [] and backend.active() == [], 10)
    vms.wait_gone()


def test_an_agent_waits_out_api_errors_while_it_looks_for_itself_and_its_gang(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lambda_agent, "RATE_LIMIT_PAUSE", 0.1, raising=False)
    backend = LambdaBackend(settings(lambda_fake, key_file), home=tmp_path)
    backend.launch(LaunchRequest("h", 1, pool_of(backend), 1, gpu_job("h", "true", 1)))  # no VM host
    (inst,) = lambda_fake.instances.values()
    inst.data["tags"].append({"key": "overcast-agent", "value": "up"})
    nonce = next(t["value"] for t in inst.data["tags"] if t["key"] == "overcast-launch")
    api = LambdaApi(LambdaSettings("node", "", (), "", endpoint=lambda_fake.endpoint), key=KEY)
    # each outlasts the client's 3 tries: 429s (Lambda's rate limit), then 5xx
    lambda_fake.faults["list"] = [429] * 3 + [503] * 3
    me = lambda_agent.find_self(api, "lambda:tx", nonce, 0.05)
    assert me["id"] == inst.data["id"] and lambda_fake.faults["list"] == []
    lambda_fake.faults["list"] = [429] * 3 + [500] * 3
    assert lambda_agent.find_head(api, me, 1, 0.05) == inst.data["private_ip"]
    assert lambda_fake.faults["list"] == []


def test_an_agent_waits_longer_after_429s_than_after_other_errors() -> None:
    patient = lambda_agent.Patient(0.5)
    waits = []
    for exc in [RateLimited("429"), RateLimited("429"), RuntimeError("503"), RateLimited("429")]:
        assert patient.call(lambda e=exc: (_ for _ in ()).throw(e), "listing") is None
        waits.append(patient.wait())
    pause = lambda_agent.RATE_LIMIT_PAUSE
    assert waits == [pause, 2 * pause, 0.5, pause]
    assert patient.call(lambda: [1], "listing") == [1] and patient.wait() == 0.5


def test_an_agent_tries_its_terminate_again_after_an_api_error(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,  # noqa: F811
    vms: LambdaVmHost,  # noqa: F811
    tmp_path: Path,
) -> None:
    # the controller is down: after its linger the node must terminate itself, through a 5xx burst
    conf = settings(lambda_fake, key_file, agent_linger_seconds=0.5)
    backend = LambdaBackend(conf, home=tmp_path)
    lambda_fake.faults["terminate"] = [500] * 3  # one call of the client: 3 tries
    backend.launch(LaunchRequest("t", 1, pool_of(backend), 1, gpu_job("t", "true", 1)))
    node = rank(vms, "t", 0)["id"]
    assert eventually(lambda: rank(vms, "t", 0)["status"] in ("terminating", "terminated"), 20)
    assert f"terminating {node}: Lambda terminate: 500" in vms.console(node)
    assert lambda_fake.faults["terminate"] == []
    vms.wait_gone()


def test_the_api_key_goes_to_https_or_to_loopback_only(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    for endpoint in ("http://cloud.lambda.ai", "http://10.0.0.5:8080", "ftp://cloud.lambda.ai"):
        with pytest.raises(ValueError, match=r"endpoint must be (an )?https://"):
            LambdaBackend(settings(lambda_fake, key_file, endpoint=endpoint), home=tmp_path)
    LambdaApi(LambdaSettings("n", "", (), "", endpoint="https://cloud.lambda.ai"), key=KEY)
    assert lambda_fake.endpoint.startswith("http://127.0.0.1:")  # the fake: loopback is allowed
    assert LambdaBackend(settings(lambda_fake, key_file), home=tmp_path).pools()
