"""Lambda Cloud settings of one backend, a small client of its public REST API v1 (httpx: Lambda has no
official Python SDK), and how Lambda's errors map onto overcast's.

The API key is sent as ``Authorization: Bearer <key>`` and is never put in an exception, a log line, a
repr or a command line: it is read from an environment variable or a file when a call needs it.

Retries are chosen on purpose:

- ``launch``: one try, except for HTTP 429 (a refused request launched nothing, so trying again is safe),
  retried within ``LAUNCH_RATE_WAIT`` seconds. A capacity error is not worth retrying here: the loop's
  cooldown and failover do better. Successive launches are spaced ``launch_interval_seconds`` apart,
  below Lambda's documented limit for this endpoint (one launch request every ~10 seconds).
- every other call: at most 3 attempts within a few seconds, on 429, 5xx and connection errors.
- short timeouts (connect 5 s, read 30 s): an unreachable endpoint becomes ``ProviderDown`` quickly.

The key goes to ``https://`` endpoints only: ``http://`` is for a loopback host (the tests' fake), since a
Lambda key is account-wide and would otherwise cross the network in cleartext from every node.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from overcast.backends.base import CapacityError, ProviderDown

DEFAULT_ENDPOINT = "https://cloud.lambda.ai"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
READ_ATTEMPTS = 3
LAUNCH_RATE_WAIT = 60.0  # how long a launch waits out 429s before the pool is reported down
LAUNCH_RETRY_MIN = 0.5  # seconds between two tries of a launch refused with 429, at least

LIVE_STATES = frozenset({"booting", "active", "unhealthy"})
GONE_STATES = frozenset({"terminating", "terminated"})
CAPACITY_CODES = frozenset({"instance-operations/launch/insufficient-capacity", "global/quota-exceeded"})
DOWN_CODES = frozenset({"global/invalid-api-key", "global/unauthorized"})

TAG = "overcast-"  # instance tag keys (after launch only the node's agent writes tags: see lambda_gangs)
STOP_NAME = "overcast-stop"  # the backend's stop request: it renames the instance (it never writes tags)
KEY_CHARS = re.compile(r"^[A-Za-z0-9_.\-]+$")  # spliced into a shell here-document: keep it plain


class LambdaError(RuntimeError):
    """A Lambda API error that is neither capacity nor an outage (a bad ssh key name, a parameter...)."""

    def __init__(self, operation: str, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"Lambda {operation} failed: {status} {code}: {message}")
        self.code = code
        self.status = status


class RateLimited(ProviderDown):
    """HTTP 429 after the client's retries: whoever retries should wait longer than for a 5xx."""


def endpoint_problem(url: str) -> str | None:
    """Why the API key must not be sent to ``url``, or None: https anywhere, http only to loopback."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        return f"must be an https:// URL ({exc}): {url!r}"
    if parts.scheme not in ("http", "https") or not host:
        return f"must be an https:// URL with a host (http:// to a loopback host only): {url!r}"
    if parts.scheme == "https" or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return f"must be https:// (http:// would send the account's API key in cleartext; loopback only): {url!r}"


@dataclass(frozen=True, slots=True)
class LambdaSettings:
    """One Lambda Cloud account and region that overcast may launch in.

    ``instance_types`` x purchase options (on-demand only: Lambda has no spot) are the pools; each holds
    at most ``max_nodes`` of our instances at once (our quota, not Lambda's capacity)."""

    name: str
    region: str
    instance_types: tuple[str, ...]
    ssh_key_name: str  # Lambda requires exactly one registered ssh key per launch
    max_nodes: int = 4
    api_key_env: str = "LAMBDA_API_KEY"  # where the key is, when api_key_file is not given
    api_key_file: str | None = None
    endpoint: str | None = None  # None: https://cloud.lambda.ai; a fake server in tests
    file_system_names: tuple[str, ...] = ()  # persistent file systems mounted on every node (checkpoints)
    purchases: tuple[str, ...] = ("on-demand",)
    python: str = "python3"
    bootstrap: str = ""
    logs_url: str | None = None  # where the agent uploads the job's output (backends/cloud_logs.py)
    key_path: str = "/run/overcast/lambda-api-key"  # the node's root-only copy of the key (tmpfs)
    launch_interval_seconds: float = 12.0  # between two launch requests (Lambda's rate limit)
    agent_poll_seconds: float = 5.0
    agent_timeout_seconds: float = 1200.0  # after this, a gang without every agent up is FAILED
    agent_linger_seconds: float = 600.0  # an ended node waits this long for the backend to terminate it
    scope: str = ""  # see AwsSettings.scope: two backends of one account must not see each other

    @property
    def owner(self) -> str:
        """The value of the ``overcast-backend`` tag on this backend's instances."""
        return f"lambda:{self.name}" + (f"/{self.scope}" if self.scope else "")

    @property
    def api_url(self) -> str:
        return (self.endpoint or DEFAULT_ENDPOINT).rstrip("/")

    def api_key(self) -> str:
        """The key, read now (never cached in the settings); ProviderDown when there is none."""
        if self.api_key_file:
            try:
                key = Path(self.api_key_file).expanduser().read_text().strip()
            except OSError as exc:
                raise ProviderDown(
                    f"Lambda: cannot read the API key file {self.api_key_file}: {exc}"
                ) from None
        else:
            key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            where = self.api_key_file or f"${self.api_key_env}"
            raise ProviderDown(f"Lambda: no API key (from {where})")
        if not KEY_CHARS.match(key):
            raise ProviderDown("Lambda: the API key has unexpected characters (a stray quote or newline?)")
        return key


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    """Lambda's tag list (``[{"key", "value"}]``) as a mapping."""
    return {str(t.get("key")): str(t.get("value", "")) for t in instance.get("tags") or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def is_capacity(status: int, code: str) -> bool:
    return code in CAPACITY_CODES or "insufficient-capacity" in code


def error_for(operation: str, status: int, body: Any) -> Exception:
    """The overcast exception for Lambda's ``{"error": {"code", "message", "suggestion"}}`` answer."""
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    code, message = str(err.get("code", "")), str(err.get("message", "")) or f"HTTP {status}"
    if err.get("suggestion"):
        message += f" ({err['suggestion']})"
    if is_capacity(status, code):
        return CapacityError(f"{code}: {message}")
    if status == 429:
        return RateLimited(f"Lambda {operation}: {status} {code}: {message}")
    if status in (401, 403) or status >= 500 or code in DOWN_CODES:
        return ProviderDown(f"Lambda {operation}: {status} {code}: {message}")
    return LambdaError(operation, code, message, status)


def _retry_after(reply: httpx.Response) -> float:
    """The 429's ``Retry-After`` in seconds (0 when absent or not a number of seconds)."""
    try:
        return max(0.0, float(reply.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


class LambdaApi:
    """The calls overcast makes (``GET``s and ``POST``s of ``/api/v1``); each raises CapacityError,
    ProviderDown or LambdaError."""

    def __init__(self, settings: LambdaSettings, key: str | None = None) -> None:
        problem = endpoint_problem(settings.api_url)
        if problem is not None:  # the fleet file says so first; settings made in code are checked here
            raise ValueError(f"lambda {settings.name!r}: endpoint {problem}")
        self.settings = settings
        self._key = key  # the agent's, read from its file; else read from the settings' source per call
        self._http = httpx.Client(base_url=settings.api_url + "/api/v1", timeout=TIMEOUT)
        self._launch_lock = threading.Lock()
        self._last_launch = 0.0

    def __repr__(self) -> str:  # never the key
        return f"LambdaApi({self.settings.api_url!r})"

    # -- the API ------------------------------------------------------------------------------------

    def instance_types(self) -> dict[str, Any]:
        return dict(self._call("GET", "/instance-types", "instance_types") or {})

    def list_instances(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/instances", "list_instances") or [])

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/instances/{instance_id}", "get_instance"))

    def launch(self, body: dict[str, Any]) -> list[str]:
        """One launch request (paced ``launch_interval_seconds`` after the previous one): the new ids."""
        with self._launch_lock:
            deadline = time.monotonic() + LAUNCH_RATE_WAIT
            spacing = self.settings.launch_interval_seconds
            while True:
                wait = self._last_launch + spacing - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._last_launch = time.monotonic()
                reply = self._send("POST", "/instance-operations/launch", "launch", body, self._auth())
                retry = max(_retry_after(reply), LAUNCH_RETRY_MIN)
                if reply.status_code == 429 and time.monotonic() + retry < deadline:
                    # refused, so nothing was launched: try again, no sooner than Lambda asks
                    spacing = max(spacing, retry)
                    continue
                data = self._data(reply, "launch")
                return [str(i) for i in (data or {}).get("instance_ids", [])]

    def set_tags(self, instance_id: str, tags: dict[str, str]) -> None:
        """Add tags to an instance. Lambda's update replaces the whole list, so read and merge; safe
        because after launch only the instance's own agent writes its tags (the backend renames)."""
        current = tags_of(self.get_instance(instance_id))
        body = {"tags": tag_list(current | tags)}
        self._call("POST", f"/instances/{instance_id}", "update_instance", body)

    def rename(self, instance_id: str, name: str) -> None:
        self._call("POST", f"/instances/{instance_id}", "update_instance", {"name": name})

    def terminate(self, instance_ids: list[str]) -> None:
        if instance_ids:
            body = {"instance_ids": list(instance_ids)}
            self._call("POST", "/instance-operations/terminate", "terminate", body)

    # -- transport ----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, operation: str, body: Any = None) -> Any:
        """A call other than launch: retried on 429, 5xx and connection errors (3 attempts, short waits)."""
        key = self._auth()  # no key: ProviderDown at once, not after the retries
        for attempt in range(READ_ATTEMPTS):
            last = attempt == READ_ATTEMPTS - 1
            try:
                reply = self._send(method, path, operation, body, key)
            except ProviderDown:
                if last:
                    raise
            else:
                if (reply.status_code != 429 and reply.status_code < 500) or last:
                    return self._data(reply, operation)
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _auth(self) -> str:
        return self._key or self.settings.api_key()

    def _send(self, method: str, path: str, operation: str, body: Any, key: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        try:
            return self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:  # the message names the URL, never the headers
            raise ProviderDown(
                f"Lambda {operation}: endpoint unreachable ({type(exc).__name__}: {exc})"
            ) from None

    @staticmethod
    def _data(reply: httpx.Response, operation: str) -> Any:
        try:
            body = reply.json()
        except ValueError:
            body = None
        if reply.status_code >= 400:
            raise error_for(operation, reply.status_code, body)
        return body.get("data") if isinstance(body, dict) else None
