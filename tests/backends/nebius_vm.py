"""A stand-in for Nebius's hypervisor, for tests: the fake API has instances but no machines behind them.

``NebiusVmHost`` (a ``cloud_vm.VmHost``) watches the fake. For each instance that becomes RUNNING it
boots a "VM": it runs the instance's ``cloud_init_user_data`` with bash, as a local process session. For
each instance that stops running (stopped by its agent, deleted by the backend, preempted by a test) it
kills every process of that VM at once. The user-data, agent and backend run unchanged on top of it.

Its metadata server plays the instance's service account token endpoint: ``GET /token`` with the header
``Metadata: true`` answers ``{"access_token", "expires_at"}`` with a token the fake API accepts (400
without the header), which is what the SDK's IMDS bearer reads. Point ``token_endpoint`` at
``token_url``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.backends.cloud_vm import MetadataHandler, VmHost
from tests.fixtures.nebius_fake import FakeNebius, State


class NebiusVmHost(VmHost):
    def __init__(self, fake: FakeNebius, root: Path, interval: float = 0.1) -> None:
        self.fake = fake
        self.tokens_issued = 0
        super().__init__(root, interval)

    @property
    def token_url(self) -> str:
        return f"{self.imds_url}/token"

    def instances(self, gone: bool = False, **labels: str) -> list[Any]:
        """The fake's listed instances (and with ``gone`` the deleted ones too) whose labels include
        ``overcast-<key>=value`` for each key."""
        wanted = {f"overcast-{k}": v for k, v in labels.items()}
        found = self.fake.listed() + (list(self.fake.deleted.values()) if gone else [])
        return [i for i in found if wanted.items() <= dict(i.metadata.labels).items()]

    # -- the hypervisor -----------------------------------------------------------------------------

    def _running(self) -> list[str] | None:
        return [i.metadata.id for i in self.fake.listed() if i.status.state == State.RUNNING]

    def _user_data(self, vm: str) -> str | None:
        found = self.fake.find(vm)
        return base64.b64encode(found.user_data.encode()).decode() if found and found.user_data else None

    def _vm_env(self, vm: str) -> dict[str, str]:
        return {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class TokenEndpoint(MetadataHandler):
            def do_GET(self) -> None:
                if self.path != "/token":
                    return self._send(404, b"")
                if self.headers.get("Metadata") != "true":
                    return self._send(400, b"missing Metadata: true")
                host.tokens_issued += 1
                expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
                body = {"access_token": host.fake.issue_token(), "expires_at": expires.isoformat()}
                self._send(200, json.dumps(body).encode(), "application/json")

        return TokenEndpoint
