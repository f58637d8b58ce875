"""One error shape for every failure: `{"error": {"code": ..., "message": ...}}`.

Clients branch on `code` (stable, snake_case); `message` is for people. Validation errors add
`details` (pydantic's list). Unexpected exceptions become a 500 whose message says nothing about
the internals; the traceback goes to the server log.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

LOG = logging.getLogger("rag_pipeline.api")

# Codes for the statuses Starlette raises by itself (unknown route, wrong method...).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    501: "not_implemented",
    503: "unavailable",
}


class ApiError(Exception):
    """An error to send as it is: status, stable code, message, optional headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        return error_response(
            error.status_code, code, str(error.detail), dict(error.headers or {}) or None
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may be a multi-megabyte query or a secret.
        details = [
            {"loc": list(item.get("loc", ())), "msg": item.get("msg", ""), "type": item.get("type")}
            for item in jsonable_encoder(error.errors())
        ]
        summary = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in details
        )
        return error_response(
            422, "validation_error", summary or "invalid request", details=details
        )

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg_pool.PoolTimeout)
    async def database_unavailable(_: Request, error: Exception) -> JSONResponse:
        LOG.warning("database unavailable: %s", error)
        return error_response(503, "database_unavailable", "the database is unavailable")

    @app.exception_handler(Exception)
    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        LOG.exception("unhandled error", exc_info=error)
        return error_response(500, "internal_error", "internal server error")
