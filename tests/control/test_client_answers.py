"""ApiClient: only a 2xx JSON answer is a result; anything else is a ClientError the CLI prints."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from overcast.control.client import ApiClient, ClientError


def client_with(answer: Callable[[httpx.Request], httpx.Response], seen: list[bytes]) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return answer(request)

    client = ApiClient("http://overcast.test", token="t")
    client.http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(handler))
    return client


def test_a_redirect_or_a_page_that_is_not_json_is_a_client_error() -> None:
    seen: list[bytes] = []
    moved = client_with(lambda _: httpx.Response(307, headers={"location": "/elsewhere"}), seen)
    with pytest.raises(ClientError, match=r"unexpected answer 307 .*to /elsewhere"):
        moved.job("j-1")
    with pytest.raises(ClientError, match="unexpected answer 307"):
        list(moved.log_stream("j-1", rank=0, attempt=None, follow=False))
    html = client_with(lambda _: httpx.Response(200, text="<html>proxy login</html>"), seen)
    with pytest.raises(ClientError, match="not JSON"):
        html.jobs()
    ok = client_with(lambda _: httpx.Response(200, json={"id": "j-1"}), seen)
    assert ok.job("j-1") == {"id": "j-1"}


def test_a_job_id_is_one_path_segment() -> None:
    seen: list[bytes] = []
    client = client_with(lambda _: httpx.Response(200, json={}), seen)
    for job_id in ("?x", "a/b", "..", "#f"):
        client.job(job_id)
        client.cancel(job_id)
    assert seen == [
        b"/v1/jobs/%3Fx", b"/v1/jobs/%3Fx/cancel", b"/v1/jobs/a%2Fb", b"/v1/jobs/a%2Fb/cancel",
        b"/v1/jobs/%2E%2E", b"/v1/jobs/%2E%2E/cancel", b"/v1/jobs/%23f", b"/v1/jobs/%23f/cancel",
    ]  # fmt: skip
