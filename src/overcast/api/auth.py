"""Bearer-token auth: one token per team (hashed in the store), admin tokens see every team.

Verified tokens are cached for a short time under their sha256, so a busy client does not pay a
database round trip per request; the plaintext is never kept, logged or echoed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from overcast.api import db
from overcast.store import Store

CACHE_SECONDS = 30.0
_bearer = HTTPBearer(auto_error=False, description="A team token from `overcast` admin setup")


@dataclass(frozen=True, slots=True)
class Principal:
    team: str
    admin: bool

    @property
    def scope(self) -> str | None:
        """The team filter for store queries: None (every team) for admins."""
        return None if self.admin else self.team


class TokenCache:
    def __init__(self, store: Store, ttl: float = CACHE_SECONDS) -> None:
        self.store = store
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Principal]] = {}

    def cached(self, token: str) -> Principal | None:
        hit = self._entries.get(_key(token))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def lookup(self, token: str) -> Principal | None:
        """From the cache, else from the store (a database round trip)."""
        hit = self.cached(token)
        if hit is not None:
            return hit
        found = self.store.team_for_token(token)
        if found is None:
            return None
        principal = Principal(*found)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[_key(token)] = (time.monotonic() + self.ttl, principal)
        return principal


def _key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"})


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    # async: a cache hit costs no thread hop; only a miss goes to the database.
    if credentials is None:
        raise _unauthorized("missing token: send 'Authorization: Bearer <token>'")
    tokens: TokenCache = request.app.state.tokens
    found = tokens.cached(credentials.credentials) or await db.call(
        tokens.store, tokens.lookup, credentials.credentials
    )
    if found is None:
        raise _unauthorized("unknown or invalid token")
    return found


Auth = Annotated[Principal, Depends(principal)]


def require_admin(who: Principal) -> None:
    if not who.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this needs an admin token")
