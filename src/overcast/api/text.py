"""Refuse text no database can store (NUL, lone surrogates) as the client's mistake, not a 500."""

from __future__ import annotations

import re

from fastapi import HTTPException
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

# In JSON a NUL is always the escape \u0000, i.e. a backslash that is not itself escaped.
_NUL_ESCAPE = re.compile(r"(?:^|[^\\])(?:\\\\)*\\u0000")


def _reject(what: str) -> HTTPException:
    return HTTPException(422, detail=f"{what} contains a NUL character or invalid Unicode")


def check_text(value: str, what: str) -> None:
    if "\x00" in value:
        raise _reject(what)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _reject(what) from None


def check_model(model: BaseModel, what: str) -> None:
    """Every string in the model, checked in one pass over its JSON (much cheaper than a walk)."""
    try:
        text = model.model_dump_json()
    except PydanticSerializationError:  # lone surrogates cannot be encoded
        raise _reject(what) from None
    if _NUL_ESCAPE.search(text):
        raise _reject(what)
