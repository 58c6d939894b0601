"""The OCI node agent's gang wait (``oci_agent.find_head``), against the fake through the SDK."""

from __future__ import annotations

from pathlib import Path

import pytest

from overcast.backends import oci_agent
from overcast.backends.oci import OciBackend
from tests.backends.test_oci import H100, config, settings  # noqa: F401
from tests.fixtures.oci_fake import COMPARTMENT, FakeOci, oci_fake, oci_server  # noqa: F401


def test_rank_0_finds_a_rank_whose_quick_job_already_ended(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Rank 1 came up, ran a job of a moment and terminated its instance before rank 0's agent looked:
    # rank 0 must still see the whole gang, not wait out the gang wait (15 min) for a live rank 1.
    ids = []
    for rank, state, extra in [("0", "RUNNING", {}), ("1", "TERMINATED", {"overcast-exit": "0"})]:
        tags = {"overcast-job": "q", "overcast-attempt": "1", "overcast-rank": rank, "overcast-agent": "up",
                "overcast-addr": f"10.0.0.{rank}"} | extra  # fmt: skip
        body = {"compartmentId": COMPARTMENT, "availabilityDomain": "Fake:US-ASHBURN-AD-1", "shape": H100}
        _, _, inst = oci_fake.launch(body | {"freeformTags": tags}, None)
        assert inst is not None
        inst.data["lifecycleState"] = state
        ids.append(inst.data["id"])
    compute = OciBackend(settings(oci_fake, config), home=tmp_path).compute
    monkeypatch.setattr(oci_agent, "GANG_WAIT_SECONDS", 0.0)  # one look: no waiting in a test
    assert oci_agent.find_head(compute, COMPARTMENT, ids[0], "q", "1", 2, 0.01) == "10.0.0.0"
