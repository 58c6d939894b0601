"""A fleet with a ``nebius:`` entry where the Nebius SDK is not installed: the backend is made (nothing
imports the SDK before its first call) and its pools are DOWN with a line saying why, so the loop goes on
with the other backends. Runs with or without the SDK: the test hides it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from overcast.catalog.fleet import parse_fleet
from overcast.control.setup import backends_from_fleet
from overcast.placement.pool import Health

FLEET = """\
nebius:
  - name: fi
    project_id: project-e00abc
    region: eu-north1
    instance_types: [gpu-h100-sxm_8gpu-128vcpu-1600gb]
    subnet_id: vpcsubnet-e00abc
    service_account_id: serviceaccount-e00abc
"""


def test_without_the_sdk_the_pools_are_down_and_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "nebius" or m.startswith("nebius.")] + ["nebius"]:
        monkeypatch.setitem(sys.modules, name, None)  # ``import nebius...`` raises ImportError
    (backend,) = backends_from_fleet(parse_fleet(FLEET), tmp_path)
    assert backend.name == "nebius:fi"
    pools = backend.pools()
    assert len(pools) == 2 and all(p.health is Health.DOWN for p in pools)  # on-demand and spot
    with pytest.raises(Exception, match=r"SDK is not installed \(pip install 'nebius>=0.6,<0.7'\)"):
        backend.active()
