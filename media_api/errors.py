"""The MediaError hierarchy, the handlers that render RFC 9457 problem+json, and how the
OpenAPI document declares them: the `Problem` schema, and per route every status and code."""

from __future__ import annotations

import errno
import json
import logging
import re
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import MISSING, BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from media_api.imaging.probe import (
    CorruptImage,
    EmptyFile,
    ImageTooLarge,
    ProbeError,
    UnsupportedMediaType,
)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://media-service.dev/problems/"
PROBLEM_REF = "#/components/schemas/Problem"

log = logging.getLogger(__name__)

RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1},
}


class ProblemType(Protocol):
    """What the document declares of a problem: a MediaError class, or an imaging refusal."""

    @property
    def code(self) -> str: ...
    @property
    def status_code(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def response_headers(self) -> dict[str, dict[str, Any]]: ...


# Every problem by its code: what the document may declare (tests/test_openapi_contract.py).
PROBLEMS: dict[str, ProblemType] = {}


class MediaError(Exception):
    """A failure the client can act on; `code` is stable and documented."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"
    # Headers every response of this problem carries, as OpenAPI header objects.
    response_headers: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        PROBLEMS[cls.code] = cls

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers: dict[str, str] = {}


PROBLEMS[MediaError.code] = MediaError  # FastAPI's own 400: a body it could not read


class NotFound(MediaError):
    status_code = 404
    code = "not-found"
    title = "Not found"


class ServiceUnavailable(MediaError):
    """A dependency is out of reach (the database, say); the handler below answers it."""

    status_code = 503
    code = "service-unavailable"
    title = "Service unavailable"
    response_headers = {"Retry-After": RETRY_AFTER_HEADER}


class RateLimited(MediaError):
    status_code = 429
    code = "rate-limited"
    title = "Too many requests"
    response_headers = {"Retry-After": RETRY_AFTER_HEADER}

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.headers["Retry-After"] = str(retry_after)


class ServerBusy(MediaError):
    """Every slot for this kind of work is taken: retry shortly (the work never started)."""

    status_code = 503
    code = "server-busy"
    title = "Server busy"
    response_headers = {"Retry-After": RETRY_AFTER_HEADER}

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(detail)
        self.headers["Retry-After"] = str(retry_after)


class ValidationFailed(MediaError):
    """The request's parameters or body do not fit the document: `errors` names each field
    (`loc`), as for the checks FastAPI runs itself."""

    status_code = 422
    code = "validation-error"
    title = "Invalid request"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("The request failed validation.", errors=errors)


@dataclass(frozen=True)
class Refusal:
    """An imaging refusal as the API answers it. imaging is pure (no HTTP; the workers record
    the same codes), so its errors are defined there once and get their status here."""

    error: type[ProbeError]
    status_code: int
    title: str
    response_headers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return self.error.code


REFUSALS: dict[type[ProbeError], Refusal] = {
    refusal.error: refusal
    for refusal in (
        Refusal(EmptyFile, 400, "The file is empty"),
        Refusal(UnsupportedMediaType, 415, "Unsupported media type"),
        Refusal(CorruptImage, 422, "Corrupt image"),
        Refusal(ImageTooLarge, 422, "Image too large"),
    )
}
PROBLEMS.update((refusal.code, refusal) for refusal in REFUSALS.values())

Declared = type[MediaError] | type[ProbeError] | ProblemType


def _problem_type(error: Declared) -> ProblemType:
    if isinstance(error, type) and issubclass(error, ProbeError):
        return REFUSALS[error]
    return error


class FieldError(BaseModel):
    """One field that failed validation."""

    loc: list[str | int] = Field(description="Where: `query`, `path`, `body`... then the name.")
    msg: str
    type: str = Field(description="A stable kind, e.g. `string_too_long`, `control_character`.")


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description=f"A URI naming the problem: {TYPE_BASE} followed by `code`.")
    title: str = Field(description="Short, the same for every occurrence of the problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What happened this time, for people.")
    code: str = Field(description="Stable and machine-readable (see the README's error table).")
    errors: list[FieldError] | MISSING = Field(
        default=MISSING, description="`validation-error` only: every field that failed."
    )
    retry_after: int | MISSING = Field(
        default=MISSING, description="`rate-limited` only: seconds until a request is allowed."
    )
    checks: dict[str, str] | MISSING = Field(
        default=MISSING, description="`not-ready` only: `ok`, `timeout` or `error` per part."
    )


def problem_responses(*errors: Declared) -> dict[int | str, dict[str, Any]]:
    """OpenAPI response entries for these problems: per status, the problem+json schema with
    the codes it can carry (an enum, so a client and schemathesis can rely on it) and the
    headers every one of them sends."""
    by_status: dict[int, list[ProblemType]] = {}
    for error in map(_problem_type, errors):
        group = by_status.setdefault(error.status_code, [])
        if error not in group:
            group.append(error)
    return {status: _problem_response(group) for status, group in sorted(by_status.items())}


def _problem_response(errors: list[ProblemType]) -> dict[str, Any]:
    codes = [error.code for error in errors]
    headers = {
        name: {**header, "required": True}
        for name, header in errors[0].response_headers.items()
        if all(name in error.response_headers for error in errors)
    }
    entry: dict[str, Any] = {
        "description": "problem+json: " + ", ".join(f"`{code}`" for code in codes),
        "content": {
            PROBLEM_JSON: {
                "schema": {
                    "allOf": [
                        {"$ref": PROBLEM_REF},
                        {"type": "object", "properties": {"code": {"enum": codes}}},
                    ]
                }
            }
        },
    }
    if headers:
        entry["headers"] = headers
    return entry


def declared_codes(response: dict[str, Any]) -> list[str]:
    """The problem codes an OpenAPI response entry built by `problem_responses` declares."""
    schema = response.get("content", {}).get(PROBLEM_JSON, {}).get("schema", {})
    for part in schema.get("allOf", []):
        enum = part.get("properties", {}).get("code", {}).get("enum")
        if enum is not None:
            return list(enum)
    return []


Call = TypeVar("Call", bound=Callable[..., Any])
# Dependencies and the problems a route answers because it depends on them (`raises`).
_RAISED_BY: dict[Callable[..., Any], tuple[type[MediaError], ...]] = {}


def raises(*errors: type[MediaError]) -> Callable[[Call], Call]:
    """Mark a dependency: every route that uses it, however indirectly, declares `errors`."""

    def mark(call: Call) -> Call:
        _RAISED_BY[call] = errors
        return call

    return mark


def _raised_by(dependant: Dependant) -> list[type[MediaError]]:
    found = list(_RAISED_BY.get(dependant.call, ())) if dependant.call else []
    for sub in dependant.dependencies:
        found += _raised_by(sub)
    return found


def _framework_problems(route: RouteContext) -> list[type[MediaError]]:
    """What FastAPI itself answers before the route runs: 422 for parameters or a body that do
    not validate, 400 for a body it cannot read (not UTF-8, a broken form)."""
    found: list[type[MediaError]] = []
    if route.body_field is not None:
        found.append(MediaError)
    if route.body_field is not None or get_flat_params(route.dependant):
        found.append(ValidationFailed)
    return found


def _merge_problems(responses: dict[str, Any], extra: list[type[MediaError]]) -> None:
    """Add `extra` to an operation's responses, merging codes of a status already declared
    (and replacing FastAPI's default 422, which is not what the API sends)."""
    statuses = {str(error.status_code) for error in extra}
    declared = [
        PROBLEMS[code]
        for status, response in responses.items()
        if status in statuses
        for code in declared_codes(response)
    ]
    for status, response in problem_responses(*declared, *extra).items():
        responses[str(status)] = response


_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_problem_docs(app: FastAPI) -> None:
    """The document declares every problem a route can answer (its own, its dependencies'
    marked with `raises`, FastAPI's), and publishes `Problem`; built once, when first asked."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # cached by FastAPI as app.openapi_schema
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
                continue
            extra = _raised_by(route.dependant) + _framework_problems(route)
            operations = document["paths"][route.path_format]
            for method in route.methods or ():
                operation = operations[method.lower()]
                _merge_problems(operation["responses"], extra)
                operation["responses"] = dict(sorted(operation["responses"].items()))
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name in _FASTAPI_VALIDATION_SCHEMAS:
            if f'"#/components/schemas/{name}"' not in json.dumps(document["paths"]):
                schemas.pop(name, None)
        problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem_schema.pop("$defs", {}))
        schemas["Problem"] = problem_schema
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    """Build a problem+json response; every error the API emits goes through here."""
    body = _document(status, code, title, detail, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _document(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return Problem(
        type=TYPE_BASE + code, title=title, status=status, detail=detail, code=code, **extra
    ).model_dump(mode="json")


def problem_document(exc: MediaError | ProbeError) -> dict[str, Any] | None:
    """The problem+json body `exc` is answered with (also kept on records, e.g. a rejected
    upload); None for a probe error no refusal maps, a bug answered 500."""
    if isinstance(exc, MediaError):
        return _document(exc.status_code, exc.code, exc.title, exc.detail, **exc.extra)
    refusal = next((r for error, r in REFUSALS.items() if isinstance(exc, error)), None)
    if refusal is None:
        return None
    return _document(refusal.status_code, refusal.code, refusal.title, exc.detail)


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


async def _refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProbeError)
    body = problem_document(exc)
    if body is None:
        raise exc  # a code without a status is a bug: on to the 500 handler
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON)


# Per app: each documented path as a regular expression, with the methods it documents.
_ALLOWED: weakref.WeakKeyDictionary[Any, list[tuple[re.Pattern[str], str]]] = (
    weakref.WeakKeyDictionary()
)


def _documented_methods(request: Request) -> str | None:
    """`Allow` for a 405: every method the document lists for the path (Starlette names only
    those of the one route it matched, and each method is a route of its own here)."""
    app = request.app
    if app not in _ALLOWED:
        _ALLOWED[app] = [
            (compile_path(path)[0], ", ".join(sorted(method.upper() for method in operations)))
            for path, operations in app.openapi()["paths"].items()
        ]
    path = request.scope["path"]
    return next((methods for pattern, methods in _ALLOWED[app] if pattern.match(path)), None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
    resp = problem(exc.status_code, code, title, str(exc.detail))
    if exc.headers:
        resp.headers.update(exc.headers)
    if exc.status_code == 405 and (allowed := _documented_methods(request)) is not None:
        resp.headers["Allow"] = allowed
    return resp


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return await _media_error(request, ValidationFailed(errors))


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
    unavailable = ServiceUnavailable("A service this API depends on is unreachable; retry shortly.")
    unavailable.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return await _media_error(request, unavailable)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Log everything, reveal nothing: internal details never reach the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal-error", "Internal server error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through problem+json, and declare them all in the OpenAPI document."""
    install_problem_docs(app)
    app.add_exception_handler(MediaError, _media_error)
    app.add_exception_handler(ProbeError, _refused)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for caught in CAUGHT:
        app.add_exception_handler(caught, _unreachable)
    app.add_exception_handler(Exception, _unhandled)
