"""A launch whose reply is lost (a read timeout or a dropped connection after the provider got the call)
is ambiguous: it must not fail the job. The AWS backend looks for the gang by its tags: a whole gang is the
launch and is adopted; otherwise what there is gets terminated and the job is requeued as after an outage.
OCI launches rank by rank: a rank whose reply was lost is found by its tags and terminated with the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from overcast.backends.aws import AwsBackend
from overcast.backends.aws_client import ReplyLost, translate
from overcast.backends.base import LaunchRequest, ProviderDown
from overcast.backends.oci import OciBackend
from overcast.store import JobRecord, JobState, Store
from tests.backends import test_oci
from tests.backends.cloud_checks import fast_loop
from tests.backends.test_aws import gpu_job, settings
from tests.control.harness import state
from tests.fixtures.moto import MotoEC2, moto_ec2, moto_server  # noqa: F401 (fixtures)
from tests.fixtures.oci_fake import FakeOci, oci_fake, oci_server  # noqa: F401

ENDPOINT = "https://ec2.us-east-1.amazonaws.com"


class LostReply:
    """The EC2 client, but run_instances' reply is lost on the way back; ``launches``: whether EC2 got
    the call (and launched) or not."""

    def __init__(self, real: Any, launches: bool) -> None:
        self.real, self.launches = real, launches

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def run_instances(self, **kw: Any) -> Any:
        if self.launches:
            self.real.run_instances(**kw)
        raise ReadTimeoutError(endpoint_url=ENDPOINT)


def live_ids(moto: MotoEC2) -> list[str]:
    found = moto.client().describe_instances()["Reservations"]
    return sorted(i["InstanceId"] for r in found for i in r["Instances"] if i["State"]["Name"] == "running")


@pytest.mark.parametrize(
    "exc", [ReadTimeoutError(endpoint_url=ENDPOINT), ConnectionClosedError(endpoint_url=ENDPOINT)]
)
def test_no_reply_is_a_lost_reply_not_an_ec2_error(exc: Exception) -> None:
    translated = translate("run_instances", exc)
    assert isinstance(translated, ReplyLost) and isinstance(translated, ProviderDown)


def launch_once(moto: MotoEC2, home: Path, launches: bool) -> tuple[AwsBackend, Store, JobRecord]:
    """One tick of a loop placing a 2-node job on a backend whose run_instances reply is lost."""
    backend = AwsBackend(settings(moto), home=home, client=LostReply(moto.client(), launches))
    store = Store(f"sqlite:///{home / 'db.sqlite'}")
    job = store.submit("default", gpu_job("t", "sleep 600", nodes=2))
    fast_loop(home, store, backend).tick()
    return backend, store, job


def test_a_gang_launched_whose_reply_was_lost_is_adopted(moto_ec2: MotoEC2, tmp_path: Path) -> None:  # noqa: F811
    backend, store, job = launch_once(moto_ec2, tmp_path, launches=True)
    record = state(store, job.id)
    assert record.state is JobState.LAUNCHING and record.attempt == 1
    ids = live_ids(moto_ec2)
    assert len(ids) == 2 and backend.active() == [(job.id, 1)]  # those two, not a second gang
    (launch,) = store.launches()
    assert sorted(launch.handle.split(",")) == ids
    assert "launched" in [e.kind for e in store.events(job_id=job.id)]


def test_a_lost_reply_without_a_gang_requeues_the_job(moto_ec2: MotoEC2, tmp_path: Path) -> None:  # noqa: F811
    _, store, job = launch_once(moto_ec2, tmp_path, launches=False)
    record = state(store, job.id)
    assert record.state is JobState.PENDING and record.restarts == 0 and record.failures == 0
    assert "no reply" in (record.reason or "")
    assert [e.kind for e in store.events(job_id=job.id)][-1] == "provider-down"
    assert live_ids(moto_ec2) == []


class OciLostReply:
    """The OCI compute client, but the reply to the launch of the last rank is lost (OCI made it)."""

    def __init__(self, real: Any, ranks: int) -> None:
        self.real, self.ranks, self.calls = real, ranks, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def launch_instance(self, *args: Any, **kw: Any) -> Any:
        reply = self.real.launch_instance(*args, **kw)
        self.calls += 1
        if self.calls == self.ranks:
            raise requests.exceptions.ReadTimeout("read timed out")
        return reply


def test_oci_a_rank_whose_reply_was_lost_is_terminated_with_the_gang(
    oci_fake: FakeOci,  # noqa: F811
    oci_server: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    real = OciBackend(test_oci.settings(oci_fake, oci_server[1]), home=tmp_path / "real")
    compute = OciLostReply(real.compute, ranks=2)
    backend = OciBackend(
        test_oci.settings(oci_fake, oci_server[1]), home=tmp_path, compute=compute, identity=real.identity
    )
    pool = test_oci.pool_of(backend, test_oci.AD1)
    with pytest.raises(ProviderDown, match="unreachable"):
        backend.launch(LaunchRequest("g", 1, pool, 2, test_oci.gpu_job("g", "sleep 600")))
    states = [i.data["lifecycleState"] for i in oci_fake.instances.values()]
    assert len(states) == 2 and all(s in ("TERMINATING", "TERMINATED") for s in states)
