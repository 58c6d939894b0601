"""One error shape for the whole API (``schemas.ErrorOut``), including request validation errors.

FastAPI's default 422 body is a list of pydantic errors; users read ``detail`` as a sentence, so
it becomes "query.limit: Input should be less than or equal to 1000", with the list kept in ``errors``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError, StatementError

from overcast.api.schemas import SUBMIT_TAGS, ErrorOut

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown token"},
    422: {"model": ErrorOut, "description": "invalid request or spec"},
    503: {"model": ErrorOut, "description": "the database does not answer"},
}


def _loc(loc: tuple[Any, ...]) -> list[str]:
    """The error's location as text, without the submit body's union tag ("body.spec.x" -> "body.x")."""
    parts = [str(part) for part in loc]
    if len(parts) > 2 and parts[0] == "body" and parts[1] in SUBMIT_TAGS:
        del parts[1]
    return parts


def _where(loc: list[str]) -> str:
    return ".".join(loc) or "request"


def _error(status: int, **body: Any) -> JSONResponse:
    return JSONResponse(ErrorOut(**body).model_dump(exclude_none=True), status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": _loc(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        detail = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors[:5])
        return _error(422, detail=detail or "invalid request", errors=errors)

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses (out of range, say) is the client's mistake, not a crash.
        first = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
        return _error(422, detail=f"the database rejected a value: {first}")

    @app.exception_handler(OperationalError)
    async def _unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # Refused connection, lost server, SQLite lock held past the busy timeout: retryable.
        log.warning("the database does not answer: %s", exc.orig)
        dialect = request.app.state.store.dialect
        return _error(503, detail=f"the {dialect} database does not answer; retry later")

    @app.exception_handler(StatementError)
    async def _statement_error(_request: Request, exc: StatementError) -> JSONResponse:
        if isinstance(exc.orig, UnicodeError):  # text the driver cannot encode
            return _error(422, detail=f"invalid text: {exc.orig}")
        log.error("database statement failed: %s", exc.orig)
        return _error(500, detail="internal error in the store")
