"""A launch whose reply is lost (a read timeout or a dropped connection after EC2 got the call) is
ambiguous: it must not fail the job. The AWS backend looks for the gang by its tags: a whole gang is the
launch and is adopted; otherwise what there is gets terminated and the job is requeued as after an outage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from overcast.backends.aws import AwsBackend
from overcast.backends.aws_client import ReplyLost, translate
from overcast.backends.base import ProviderDown
from overcast.store import JobRecord, JobState, Store
from tests.backends.cloud_checks import fast_loop
from tests.backends.test_aws import gpu_job, settings
from tests.control.harness import state
from tests.fixtures.moto import MotoEC2, moto_ec2, moto_server  # noqa: F401 (fixtures)

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
