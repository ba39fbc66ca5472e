"""The MediaError hierarchy and the one handler that renders RFC 9457 problem+json."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://media-service.dev/problems/"

log = logging.getLogger(__name__)


class MediaError(Exception):
    """A failure the client can act on; `code` is stable and documented."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers: dict[str, str] = {}


class NotFound(MediaError):
    status_code = 404
    code = "not-found"
    title = "Not found"


class ServiceUnavailable(MediaError):
    status_code = 503
    code = "service-unavailable"
    title = "Service unavailable"


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    """Build a problem+json response; every error the API emits goes through here."""
    body = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


_HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


async def _media_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MediaError)
    resp = problem(exc.status_code, exc.code, exc.title, exc.detail, **exc.extra)
    resp.headers.update(exc.headers)
    return resp


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
    resp = problem(exc.status_code, code, title, str(exc.detail))
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem(
        422,
        "validation-error",
        "Invalid request",
        "The request failed validation.",
        errors=errors,
    )


# A dependency that cannot be reached (a refused or dropped database connection, an exhausted
# pool) is the client's cue to retry later, not a bug: 503 with Retry-After, not 500.
UNREACHABLE = (
    ConnectionError,  # refused or reset while connecting (asyncpg raises it raw)
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # no pooled connection came free in time
)
RETRY_AFTER_SECONDS = 5


async def _unreachable(request: Request, exc: Exception) -> JSONResponse:
    # One line, no traceback: during an outage every request lands here.
    log.warning("dependency unreachable on %s %s: %r", request.method, request.url.path, exc)
    resp = problem(
        503,
        ServiceUnavailable.code,
        ServiceUnavailable.title,
        "A service this API depends on is unreachable; retry shortly.",
    )
    resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return resp


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Log everything, reveal nothing: internal details never reach the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal-error", "Internal server error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through problem+json."""
    app.add_exception_handler(MediaError, _media_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for unreachable in UNREACHABLE:
        app.add_exception_handler(unreachable, _unreachable)
    app.add_exception_handler(Exception, _unhandled)
