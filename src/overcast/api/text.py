"""Refuse text no database can store (NUL, lone surrogates) as the client's mistake, not a 500."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException


def bad_text(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string that contains NUL or is not valid Unicode, else None."""
    if isinstance(value, str):
        if "\x00" in value:
            return path or "value"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "value"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = bad_text(key, path) or bad_text(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = bad_text(item, f"{path}[{i}]")
            if found:
                return found
    return None


def check_text(value: Any, what: str) -> None:
    where = bad_text(value)
    if where is not None:
        raise HTTPException(
            422,
            detail=f"{what}: {where} contains a NUL character or invalid Unicode",
        )
