"""The MediaError hierarchy and the one handler that renders RFC 9457 problem+json."""

from __future__ import annotations

import errno
import logging
import socket
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


class RateLimited(MediaError):
    status_code = 429
    code = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.headers["Retry-After"] = str(retry_after)


class ServerBusy(MediaError):
    """Every slot for this kind of work is taken: retry shortly (the work never started)."""

    status_code = 503
    code = "server-busy"
    title = "Server busy"

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(detail)
        self.headers["Retry-After"] = str(retry_after)


def problem_responses(*errors: type[MediaError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries listing the stable problem codes each status can carry."""
    codes: dict[int, list[str]] = {}
    for error in errors:
        codes.setdefault(error.status_code, []).append(f"`{error.code}`")
    return {
        status_code: {
            "description": "problem+json: " + ", ".join(names),
            "content": {PROBLEM_JSON: {}},
        }
        for status_code, names in codes.items()
    }


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


# A dependency that cannot be reached (a database that is down, starting up, full or not even
# in DNS; an exhausted pool) is the client's cue to retry later, not a bug: 503 with
# Retry-After. Anything else of the same types is a bug and falls through to the 500 handler,
# which logs its traceback. What asyncpg and SQLAlchemy really raise is in tests/test_health.py.
CAUGHT = (
    OSError,  # raw from asyncpg's connect: refused, no route, timed out, name not resolved
    sa_exc.DBAPIError,  # driver errors, wrapped by SQLAlchemy (connect-time ones included)
    sa_exc.TimeoutError,  # no pooled connection came free in time
)
# No route to the host: connect fails with these, raw, before anything is sent.
_UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})
# Postgres refusing a connection for now: shutting down, crashed, starting up, full. Class 08
# (connection exception) is matched by prefix.
_REFUSING_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
RETRY_AFTER_SECONDS = 5


def _refused_by_server(sqlstate: object) -> bool:
    return isinstance(sqlstate, str) and (
        sqlstate.startswith("08") or sqlstate in _REFUSING_SQLSTATES
    )


def is_unreachable(exc: BaseException) -> bool:
    """True when `exc` says a dependency could not be reached, rather than that we have a bug."""
    # TimeoutError: asyncpg's connect timeout; gaierror: the host is not in DNS (a compose
    # service that is stopped); ConnectionError: refused or reset.
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror | sa_exc.TimeoutError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _UNREACHABLE_ERRNOS  # not a full disk or a missing file
    if isinstance(exc, sa_exc.OperationalError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        # SQLAlchemy wraps asyncpg's connect-time refusals (CannotConnectNowError,
        # TooManyConnectionsError) as plain DBAPIError: the SQLSTATE tells them apart. An
        # InterfaceError on a live connection ("another operation is in progress") is a bug.
        return exc.connection_invalidated or _refused_by_server(getattr(exc.orig, "sqlstate", None))
    return False


async def _unreachable(request: Request, exc: Exception) -> JSONResponse:
    if not is_unreachable(exc):
        raise exc  # on to the 500 handler, which logs the traceback
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
    for caught in CAUGHT:
        app.add_exception_handler(caught, _unreachable)
    app.add_exception_handler(Exception, _unhandled)
