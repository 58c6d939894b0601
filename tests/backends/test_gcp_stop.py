"""The GCP backend's stop() against the poll that goes on while it waits (the control loop's Stopper runs
stop() in a thread while the loop keeps polling), with the fake of tests/fixtures/gcp_fake.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from overcast.backends.base import LaunchRequest
from tests.backends.cloud_checks import eventually
from tests.backends.test_gcp import ZB, backend_of, gpu_job, pool_of
from tests.fixtures.gcp_fake import FakeGce
from tests.fixtures.gcp_http import gce, gce_server  # noqa: F401


def test_a_poll_during_stops_grace_leaves_the_live_instances_alone(gce: FakeGce, tmp_path: Path) -> None:  # noqa: F811
    backend = backend_of(gce, tmp_path)
    backend.launch(LaunchRequest("g", 1, pool_of(backend, ZB), 2, gpu_job("g", "sleep 60")))
    assert eventually(lambda: [i["status"] for i in gce.listed()] == ["RUNNING", "RUNNING"])
    # no agent here: nothing ends the instances during the grace, so only the backend could
    stopper = threading.Thread(target=backend.stop, args=("g", 1, 2.0))
    started = time.monotonic()
    stopper.start()
    while time.monotonic() - started < 1.2:  # well within the grace: the loop keeps polling
        assert backend.poll() == []
        assert [i["status"] for i in gce.listed()] == ["RUNNING", "RUNNING"]
        time.sleep(0.1)
    assert all(i["labels"].get("overcast-stop") == "1" for i in gce.listed())  # the agents were asked
    stopper.join()
    assert all(i.get("deleting") for i in gce.listed())  # the grace is over: stop() deleted the gang
    assert backend.poll() == [] and backend.active() == []
    assert gce.listed() == [] or all(i.get("deleting") for i in gce.listed())
