"""A cap on request body size: a client's oversized body is a 413, read no further than the cap.

Without it a 50 MB JSON spec (a huge ``env``, say) is parsed, validated and stored, holding the
event loop for seconds. Pure ASGI middleware: a few microseconds per request.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 2 * 1024 * 1024  # a 200,000-character YAML spec fits even if every character is escaped


def _too_large(limit: int) -> str:
    return f"request body over {limit // (1024 * 1024)} MiB"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": _too_large(self.max_bytes)}, 413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:  # a chunked body declares no length: count what arrives
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, detail=_too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)
