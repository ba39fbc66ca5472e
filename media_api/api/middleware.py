"""Cross-cutting HTTP policy: request ids, Server-Timing and access log, compression, security
headers, CORS, and the count of requests in flight that shutdown waits for."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from media_api.api import tus
from media_api.logs import RequestLog
from media_api.settings import Settings

# Responses this large or larger are gzipped for clients that accept it; smaller ones gain
# too little for the CPU. Level 6, zlib's default: on a 100-item listing page level 9 costs 40 %
# more CPU for 1.5 % fewer bytes (docs/benchmarks.md, "Listing page compression").
GZIP_MINIMUM_BYTES = 1000
GZIP_LEVEL = 6

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Pure ASGI (not BaseHTTPMiddleware), so streamed request bodies pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class InFlight:
    """The HTTP requests being handled, so shutdown can wait for the last one to end.

    A request counts until every layer under it has returned, its cleanup included: one that
    uvicorn cancelled at the end of the shutdown grace is still rolling back and deleting what
    it stored, with the engine and the S3 client the lifespan is about to close.
    """

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()  # binds to a loop only once something waits on it
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle.wait()


class CountInFlight:
    """Pure ASGI, outermost: a request is in flight from its first byte to its last cleanup."""

    def __init__(self, app: ASGIApp, in_flight: InFlight) -> None:
        self.app = app
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.leave()


def install_http_policies(app: FastAPI, settings: Settings, in_flight: InFlight) -> None:
    """CORS only for configured origins; bearer tokens need no cookies, so no credentials
    unless asked for (and never with a wildcard: Settings refuses that combination). Every
    request is counted in `in_flight`, which shutdown waits on.

    From the outside in: CountInFlight, RequestLog, GZip, SecurityHeaders, CORS, TusProtocol
    (on the tus prefix only, inside CORS so that its 412 carries the CORS headers). Every layer
    is pure ASGI and only GZip touches a body, the response's, so upload bodies stream through
    untouched; it sits inside RequestLog so that Server-Timing includes the compression."""
    app.add_middleware(tus.TusProtocol)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-ID",
                "Last-Event-ID",  # a fetch-based SSE client resuming a stream
                *tus.REQUEST_HEADERS,
            ],
            expose_headers=["Retry-After", *tus.EXPOSED_HEADERS],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=GZIP_LEVEL)
    app.add_middleware(RequestLog)  # its id and timing cover everything else
    app.add_middleware(CountInFlight, in_flight=in_flight)  # outermost: counts all of it
