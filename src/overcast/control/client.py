"""A small HTTP client for the overcast API, used by the CLI (``overcast launch``, ``status``...).

OVERCAST_API_URL (default http://127.0.0.1:8765) and OVERCAST_TOKEN (default: the admin token that
``overcast up`` wrote to $OVERCAST_HOME/token).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from overcast.store.engine import overcast_home

DEFAULT_URL = "http://127.0.0.1:8765"


class ClientError(Exception):
    """Something the user can act on: the server is not running, the token is wrong, a 4xx answer."""


def default_token() -> str | None:
    token = os.environ.get("OVERCAST_TOKEN")
    if token:
        return token
    path = overcast_home() / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _segment(value: str) -> str:
    """``value`` as one URL path segment: '?x', '../y' or 'a/b' cannot change which endpoint is asked."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


class ApiClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("OVERCAST_API_URL") or DEFAULT_URL).rstrip("/")
        token = token or default_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the overcast server at {self.url} ({exc.__class__.__name__}); "
                "start one with `overcast up` or set OVERCAST_API_URL"
            ) from None
        self._check(response)
        try:
            return response.json()
        except ValueError:  # a proxy's HTML page, say: not the overcast API
            raise ClientError(
                f"{method} {path}: the answer from {self.url} is not JSON (is it the overcast API?)"
            ) from None

    def _check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        if response.status_code < 400:  # a redirect (not followed) or 1xx: not an answer to act on
            where = response.headers.get("location")
            moved = f", to {where}" if where else ""
            raise ClientError(
                f"unexpected answer {response.status_code} from {self.url}{response.url.path}{moved}"
            )
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if response.status_code == 401:
            hint = f"set OVERCAST_TOKEN, or run `overcast up` to write {overcast_home() / 'token'}"
            detail = f"{detail} ({hint})"
        raise ClientError(f"{detail}" if isinstance(detail, str) else f"{response.status_code}: {detail}")

    def submit_yaml(self, text: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"yaml": text} | ({"env": env} if env else {})
        return self.request("POST", "/v1/jobs", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{_segment(job_id)}")

    def jobs(self, limit: int = 1000) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/jobs", params={"limit": limit})["jobs"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/jobs/{_segment(job_id)}/cancel")

    def events(self, job_id: str | None = None, after: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"after": after}
        if job_id:
            params["job_id"] = job_id
        return self.request("GET", "/v1/events", params=params)

    def pools(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/pools")["pools"]

    def chaos(self, provider: str, action: str, job_id: str | None, duration_s: float | None) -> str:
        body = {"provider": provider, "action": action, "job_id": job_id, "duration_s": duration_s}
        return self.request("POST", "/v1/chaos", json=body)["result"]

    def log_stream(self, job_id: str, *, rank: int, attempt: int | None, follow: bool) -> Iterator[bytes]:
        params: dict[str, Any] = {"rank": rank, "follow": follow}
        if attempt:
            params["attempt"] = attempt
        try:
            path = f"/v1/jobs/{_segment(job_id)}/logs"
            with self.http.stream("GET", path, params=params, timeout=None) as response:
                if not response.is_success:
                    response.read()
                    self._check(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise ClientError(f"lost the connection to {self.url}: {exc}") from None
