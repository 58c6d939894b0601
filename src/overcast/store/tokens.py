"""API tokens: ``oc_<id>_<secret>``; only sha256(salt + secret) is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "oc"


@dataclass(frozen=True, slots=True)
class NewToken:
    token_id: str
    salt: str
    secret_hash: str
    plaintext: str  # handed to the user once, never stored


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def new_token() -> NewToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(24)
    salt = secrets.token_hex(16)
    return NewToken(token_id, salt, hash_secret(salt, secret), f"{PREFIX}_{token_id}_{secret}")


# What new_token() makes: 16 hex digits of id, a urlsafe-base64 secret. Anything else (a NUL, a
# megabyte of text) is refused here, without a database round trip.
_SHAPE = re.compile(rf"{PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{16,128}})")


def split_token(token: str) -> tuple[str, str] | None:
    """(token_id, secret), or None if the text is not shaped like one of our tokens."""
    match = _SHAPE.fullmatch(token)
    return None if match is None else (match[1], match[2])


def matches(salt: str, secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(salt, secret), secret_hash)
