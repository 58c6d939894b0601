"""A real asynchronous HTTP reverse proxy for one service (aiohttp).

Least-load policy over *ready* replicas only, streaming responses passed through chunk by chunk. A request
goes to another replica only when it cannot have been acted on: the connection failed before anything was
sent, or (idempotent methods only) the replica closed it or answered 502/503 before any byte of an answer. A
POST that timed out or was cut is never sent twice: a generation is not run twice, nor billed twice.

Timeouts come from the spec's ``proxy`` (``configure``): connect, read (to the first byte of the response and
between two reads of its body), and an optional cap on the whole body; no total cap by default, so a long
streamed generation runs as long as it keeps sending. Its own Prometheus metrics live in a registry of their
own, so several load balancers can run in one process.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from overcast.spec.models import Proxy

# Hop-by-hop headers are about one connection, not the message: never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
CONTROL_PREFIX = "/-/"  # the LB's own endpoints: /-/metrics, /-/replicas
# Methods a replica may receive twice without harm (RFC 9110 9.2.2): retried after a dropped connection.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(slots=True)
class Endpoint:
    id: str
    url: str  # "http://127.0.0.1:8001"
    in_flight: int = 0
    failures: int = 0


@dataclass
class RateMeter:
    """Requests per second over a sliding window: the autoscaler's input."""

    window_seconds: float = 10.0
    _stamps: deque[float] = field(default_factory=deque)

    def hit(self, now: float) -> None:
        self._stamps.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        return len(self._stamps) / self.window_seconds

    def _trim(self, now: float) -> None:
        cutoff = now - self.window_seconds
        while self._stamps and self._stamps[0] < cutoff:
            self._stamps.popleft()


class LoadBalancer:
    def __init__(self, name: str, *, retries: int = 2, proxy: Proxy | None = None) -> None:
        self.name = name
        self.retries = retries
        self.configure(proxy or Proxy())
        self.rate = RateMeter()
        self._endpoints: dict[str, Endpoint] = {}
        self._rotation = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry()
        self.m_requests = Counter("lb_requests", "Requests answered", ["code"], registry=self.registry)
        self.m_retries = Counter("lb_retries", "Requests retried on another replica", registry=self.registry)
        self.m_no_replica = Counter(
            "lb_no_ready_replica", "Requests with no ready replica", registry=self.registry
        )
        self.m_ready = Gauge("lb_ready_replicas", "Ready replicas behind the LB", registry=self.registry)
        self.m_latency = Histogram(
            "lb_request_seconds",
            "Time to the end of the response",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def configure(self, proxy: Proxy) -> None:
        """A spec's timeouts (the controller passes each version's); requests in flight keep theirs."""
        self.proxy = proxy
        # connect: getting a connection (a pooled one, or a new one), before anything is sent.
        # sock_read: restarts with every read, so it bounds the wait for the headers and each gap in a body.
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=proxy.connect_timeout_seconds, sock_read=proxy.read_timeout_seconds
        )

    # -- replica set (written by the replica manager) ------------------------------------------------
    def set_ready(self, endpoints: dict[str, str]) -> None:
        """Replace the set of ready replicas: id -> base URL. Keeps in-flight counters of survivors."""
        self._endpoints = {
            rid: self._endpoints.get(rid) or Endpoint(rid, url.rstrip("/")) for rid, url in endpoints.items()
        }
        self.m_ready.set(len(self._endpoints))

    @property
    def ready(self) -> dict[str, str]:
        return {e.id: e.url for e in self._endpoints.values()}

    def _pick(self, exclude: set[str]) -> Endpoint | None:
        """Least in-flight requests (then fewest recent failures); ties rotate round-robin."""
        endpoints = list(self._endpoints.values())
        if not endpoints:
            return None
        start = next(self._rotation) % len(endpoints)
        best: Endpoint | None = None
        for e in endpoints[start:] + endpoints[:start]:
            if e.id in exclude:
                continue
            if best is None or (e.in_flight, e.failures) < (best.in_flight, best.failures):
                best = e
        return best

    # -- HTTP -----------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get(CONTROL_PREFIX + "metrics", self._metrics)
        app.router.add_get(CONTROL_PREFIX + "replicas", self._replicas)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def _replicas(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"service": self.name, "ready": self.ready, "rps": self.rate.rate(time.time())}
        )

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        started = time.perf_counter()
        self.rate.hit(time.time())
        body = await request.read()  # buffered, so that a failed attempt can be retried elsewhere
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        tried: set[str] = set()
        for _attempt in range(self.retries + 1):
            endpoint = self._pick(tried)
            if endpoint is None:
                break
            tried.add(endpoint.id)
            endpoint.in_flight += 1
            try:
                return await self._forward(request, endpoint, headers, body, started)
            except _Retry:
                endpoint.failures += 1
                self.m_retries.inc()
            finally:
                endpoint.in_flight -= 1
        if not tried:
            self.m_no_replica.inc()
        self.m_requests.labels("503").inc()
        return web.json_response({"error": f"no ready replica of {self.name} could answer"}, status=503)

    async def _forward(
        self, request: web.Request, endpoint: Endpoint, headers: dict[str, str], body: bytes, started: float
    ) -> web.StreamResponse:
        url = endpoint.url + request.rel_url.path_qs
        idempotent = request.method in IDEMPOTENT
        try:
            upstream = await self._session.request(  # type: ignore[union-attr]
                request.method, url, headers=headers, data=body, allow_redirects=False, timeout=self.timeout
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _Retry(str(exc)) from exc  # no connection: nothing was sent
        except TimeoutError:  # sent, and no answer within the read timeout: maybe still working on it
            endpoint.failures += 1
            return self._error(
                504, f"replica {endpoint.id} sent no response in {self.proxy.read_timeout_seconds} s"
            )
        except (aiohttp.ClientError, OSError) as exc:  # sent, then the connection broke: maybe acted on
            if idempotent:
                raise _Retry(str(exc)) from exc
            endpoint.failures += 1
            return self._error(502, f"replica {endpoint.id} closed the connection: {exc}")
        async with upstream:
            if upstream.status in (502, 503) and idempotent:
                raise _Retry(f"replica answered {upstream.status}")
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    response.headers[k] = v
            await response.prepare(request)
            # From here on bytes have reached the client: a failure can no longer be retried.
            try:
                async with asyncio.timeout(self.proxy.body_timeout_seconds):  # None: no cap
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                # The status is out: only a cut connection tells the client the body is incomplete.
                endpoint.failures += 1
                self.m_requests.labels("cut").inc()
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
        endpoint.failures = 0
        self.m_requests.labels(str(upstream.status)).inc()
        self.m_latency.observe(time.perf_counter() - started)
        return response

    def _error(self, status: int, why: str) -> web.Response:
        self.m_requests.labels(str(status)).inc()
        return web.json_response({"error": f"{self.name}: {why}"}, status=status)


class _Retry(Exception):
    """The request cannot have been acted on: send it to another replica."""


async def serve(lb: LoadBalancer, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start ``lb`` on host:port (0 = a free port); returns the runner (to clean up) and the port."""
    runner = web.AppRunner(lb.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    return runner, sockets[0].getsockname()[1]
