"""A tiny deterministic "model server" for overcast's service examples (CPU only, stdlib + aiohttp).

POST /generate {"prompt": "...", "max_tokens": 16}  -> {"text": ..., "replica": ...}
POST /generate?stream=1                             -> the same tokens, streamed one chunk per token
GET  /health                                        -> 200 once warm (after --warmup seconds), else 503

The output depends only on the prompt, so every replica answers the same: a client cannot tell which one
served it, which is what a load balancer test needs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time

from aiohttp import web

WORDS = [
    "the",
    "a",
    "cloud",
    "gpu",
    "pool",
    "train",
    "serve",
    "model",
    "token",
    "fast",
    "cheap",
    "spot",
    "reserved",
    "node",
    "rack",
    "region",
    "zone",
]


def generate(prompt: str, max_tokens: int) -> list[str]:
    digest = hashlib.sha256(prompt.encode()).digest()
    return [WORDS[digest[i % len(digest)] % len(WORDS)] for i in range(max_tokens)]


def make_app(warmup_seconds: float, replica: str, token_delay: float) -> web.Application:
    started = time.monotonic()

    async def health(_request: web.Request) -> web.Response:
        if time.monotonic() - started < warmup_seconds:
            return web.Response(status=503, text="warming up")
        return web.Response(text="ok")

    async def gen(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            prompt = str(body.get("prompt", ""))
            max_tokens = max(1, min(512, int(body.get("max_tokens", 16))))
        except (ValueError, TypeError, AttributeError):
            return web.json_response({"error": "body must be JSON with prompt and max_tokens"}, status=400)
        tokens = generate(prompt, max_tokens)
        if request.query.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/plain", "X-Replica": replica})
            await resp.prepare(request)
            for tok in tokens:
                await resp.write((tok + " ").encode())
                if token_delay:
                    await asyncio.sleep(token_delay)
            await resp.write_eof()
            return resp
        return web.json_response(
            {"text": " ".join(tokens), "replica": replica}, headers={"X-Replica": replica}
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/generate", gen)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("OVERCAST_REPLICA_PORT", "8080")))
    # on a cluster node the load balancer comes from another host: the controller exports 0.0.0.0 there
    parser.add_argument("--host", default=os.environ.get("OVERCAST_REPLICA_HOST") or "127.0.0.1")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--token-delay", type=float, default=0.0)
    args = parser.parse_args()
    replica = os.environ.get("OVERCAST_REPLICA_ID", f"pid-{os.getpid()}")
    web.run_app(
        make_app(args.warmup, replica, args.token_delay),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
