"""The load balancer against real replica processes on loopback."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
import pytest

from overcast.serve.lb import LoadBalancer, serve
from tests.serve.replica_procs import ReplicaProcess


@pytest.fixture()
def replicas():
    procs = [ReplicaProcess(f"r{i}") for i in range(3)]
    try:
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.kill()


async def _with_lb(procs, body):
    lb = LoadBalancer("svc")
    lb.set_ready({p.id: p.url for p in procs})
    runner, port = await serve(lb)
    try:
        async with aiohttp.ClientSession() as client:
            return await body(lb, client, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def _post(client, base, prompt="hi", **params):
    async with client.post(base + "/generate", json={"prompt": prompt, "max_tokens": 4}, params=params) as r:
        return r.status, r.headers.get("X-Replica"), await r.text()


def test_spreads_load_and_answers_like_a_direct_call(replicas):
    async def body(lb, client, base):
        results = await asyncio.gather(*[_post(client, base, "same") for _ in range(60)])
        async with client.post(replicas[0].url + "/generate", json={"prompt": "same", "max_tokens": 4}) as r:
            direct = (await r.json())["text"]
        return results, direct

    results, direct = asyncio.run(_with_lb(replicas, body))
    assert all(status == 200 for status, _, _ in results)
    texts = {json.loads(body)["text"] for _, _, body in results}
    assert texts == {direct}  # every replica answers what a direct call answers
    used = Counter(rid for _, rid, _ in results)
    assert set(used) == {"r0", "r1", "r2"}  # least-load spreads concurrent requests over all replicas


def test_retries_on_a_dead_replica_and_only_uses_ready_ones(replicas):
    replicas[1].kill()

    async def body(lb, client, base):
        ok = [await _post(client, base) for _ in range(30)]
        lb.set_ready({replicas[0].id: replicas[0].url})  # r2 no longer ready
        only = [await _post(client, base) for _ in range(10)]
        return ok, only, lb

    ok, only, lb = asyncio.run(_with_lb(replicas, body))
    assert all(status == 200 for status, _, _ in ok)
    assert {rid for _, rid, _ in ok} <= {"r0", "r2"}
    assert lb.m_retries._value.get() >= 1  # the dead replica was tried, then another answered
    assert {rid for _, rid, _ in only} == {"r0"}


def test_streaming_passes_through_and_no_replica_is_503(replicas):
    async def body(lb, client, base):
        status, _, text = await _post(client, base, "stream me", stream="1")
        lb.set_ready({})
        empty = await _post(client, base)
        async with client.get(base + "/-/metrics") as r:
            metrics = await r.text()
        return status, text, empty, metrics

    status, text, empty, metrics = asyncio.run(_with_lb(replicas, body))
    assert status == 200 and len(text.split()) == 4
    assert empty[0] == 503 and "no ready replica" in empty[2]
    assert "lb_requests_total" in metrics
