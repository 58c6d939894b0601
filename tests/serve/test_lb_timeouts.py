"""The load balancer's timeouts and retries: a long stream is never cut by a total timeout, and a request a
replica may have acted on (sent, then slow or dropped) is never sent to a second replica."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import httpx
from aiohttp import web

from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer, serve
from overcast.spec.models import Autoscaling, Proxy, ServiceSpec
from tests.serve.replica_procs import ReplicaProcess


async def _replica(
    seen: Counter[str], *, delay: float = 0.0, drop: bool = False
) -> tuple[web.AppRunner, str]:
    """An in-process replica that counts the requests it receives; it answers after ``delay`` seconds, or
    with ``drop`` closes the connection without a word."""

    async def handle(request: web.Request) -> web.StreamResponse:
        seen[request.method] += 1
        await request.read()
        if drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        await asyncio.sleep(delay)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


async def _through_lb(proxy: Proxy, replicas: int, body, **kind):
    seen: Counter[str] = Counter()
    started = [await _replica(seen, **kind) for _ in range(replicas)]
    lb = LoadBalancer("svc", proxy=proxy)
    lb.set_ready({f"r{i}": url for i, (_, url) in enumerate(started)})
    runner, port = await serve(lb)
    try:
        async with aiohttp.ClientSession() as client:
            return await body(client, f"http://127.0.0.1:{port}"), seen, lb
    finally:
        await runner.cleanup()
        for r, _ in started:
            await r.cleanup()


def test_a_stream_longer_than_every_timeout_arrives_whole():
    """40 tokens at 0.05 s (2 s) through a 1 s read timeout: each gap is short, so nothing is cut
    (before: aiohttp's total=timeout covered the body and cut it after the 200 was sent)."""
    rep = ReplicaProcess("r0", token_delay=0.05)
    try:
        rep.wait_ready()
        direct = httpx.post(
            rep.url + "/generate?stream=1", json={"prompt": "p", "max_tokens": 40}, timeout=30
        )

        async def body(client, base):
            async with client.post(base + "/generate?stream=1", json={"prompt": "p", "max_tokens": 40}) as r:
                return r.status, await r.read()

        async def run():
            lb = LoadBalancer("svc", proxy=Proxy(connect_timeout_seconds=1.0, read_timeout_seconds=1.0))
            lb.set_ready({"r0": rep.url})
            runner, port = await serve(lb)
            try:
                async with aiohttp.ClientSession() as client:
                    return await body(client, f"http://127.0.0.1:{port}")
            finally:
                await runner.cleanup()

        status, got = asyncio.run(run())
        assert status == 200 and len(direct.content.split()) == 40
        assert got == direct.content
    finally:
        rep.kill()


def test_a_slow_post_is_answered_504_and_never_sent_twice():
    async def body(client, base):
        async with client.post(base + "/generate", json={"prompt": "p"}) as r:
            return r.status, await r.text()

    proxy = Proxy(read_timeout_seconds=0.3)
    (status, text), seen, lb = asyncio.run(_through_lb(proxy, 3, body, delay=1.0))
    assert status == 504 and "no response in 0.3 s" in text
    assert seen["POST"] == 1  # before: sent to every replica in turn, then 503
    assert lb.m_retries._value.get() == 0


def test_a_dropped_post_is_502_but_a_dropped_get_goes_to_another_replica():
    async def body(client, base):
        async with client.post(base + "/generate", json={"prompt": "p"}) as r:
            post = r.status
        async with client.get(base + "/x") as r:
            return post, r.status

    (post, get), seen, lb = asyncio.run(_through_lb(Proxy(), 2, body, drop=True))
    assert post == 502 and seen["POST"] == 1  # the replica may have acted on it: not sent again
    # idempotent: tried on both replicas (both drop it here); aiohttp may resend it once more itself
    assert get == 503 and seen["GET"] >= 2
    assert lb.m_retries._value.get() == 2


def test_a_dead_replica_is_skipped_for_a_post():
    """Connection refused: nothing was sent, so even a POST goes to the next replica."""

    async def body(client, base):
        return [(await client.post(base + "/generate", json={})).status for _ in range(6)]

    async def run():
        seen: Counter[str] = Counter()
        live, url = await _replica(seen)
        lb = LoadBalancer("svc")
        lb.set_ready({"dead": "http://127.0.0.1:9", "live": url})  # port 9 (discard): nobody listens
        runner, port = await serve(lb)
        try:
            async with aiohttp.ClientSession() as client:
                return await body(client, f"http://127.0.0.1:{port}"), seen
        finally:
            await runner.cleanup()
            await live.cleanup()

    statuses, seen = asyncio.run(run())
    assert statuses == [200] * 6 and seen["POST"] == 6


def test_body_timeout_cuts_a_stream_so_the_client_sees_it_incomplete():
    rep = ReplicaProcess("r0", token_delay=0.05)
    try:
        rep.wait_ready()

        async def run():
            lb = LoadBalancer("svc", proxy=Proxy(body_timeout_seconds=0.5))
            lb.set_ready({"r0": rep.url})
            runner, port = await serve(lb)
            try:
                async with aiohttp.ClientSession() as client:
                    url = f"http://127.0.0.1:{port}/generate?stream=1"
                    async with client.post(url, json={"prompt": "p", "max_tokens": 40}) as r:
                        try:
                            await r.read()
                        except aiohttp.ClientPayloadError:
                            return r.status, "cut", lb
                        return r.status, "whole", lb
            finally:
                await runner.cleanup()

        status, outcome, lb = asyncio.run(run())
        assert (status, outcome) == (200, "cut")
        assert lb.m_requests.labels("cut")._value.get() == 1
    finally:
        rep.kill()


def test_the_controller_gives_its_load_balancer_each_versions_proxy_timeouts():
    lb = LoadBalancer("svc")
    assert lb.proxy == Proxy() and lb.timeout.total is None  # no cap on a whole exchange by default
    first = ServiceSpec(name="svc", replicas=Autoscaling(min_replicas=0), proxy=Proxy(read_timeout_seconds=7))
    ctl = ServiceController(first, [], lb)
    try:
        assert lb.timeout.sock_read == 7 and lb.timeout.connect == 5
        ctl.update(
            first.model_copy(update={"proxy": Proxy(connect_timeout_seconds=1, body_timeout_seconds=60)})
        )
        assert (lb.timeout.connect, lb.timeout.sock_read, lb.proxy.body_timeout_seconds) == (1, 300, 60)
    finally:
        ctl.detach()
