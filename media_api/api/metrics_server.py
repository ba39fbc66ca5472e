"""GET /metrics on a listener of its own (MEDIA_METRICS_PORT), off the API's public port: a
scrape costs a database query and a broker round trip, so it is no endpoint for everyone.

Every server process's lifespan enters `serving_metrics`, which runs a second uvicorn server
as a task in that process's event loop, on a socket bound with SO_REUSEPORT. Under
`media-api serve --workers N` all N processes bind the same port and the kernel spreads the
scrapes over them; whichever answers renders the whole server (multiprocess mode, see
media_api.metrics), with the very function the API's own /metrics uses without the setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from media_api.api.health import render_metrics
from media_api.errors import install_error_handlers
from media_api.resources import AppState

log = logging.getLogger(__name__)

# Bound on the listener's start, and on the scrapes in flight when it stops (each of those is
# bounded by MEDIA_READINESS_TIMEOUT_SECONDS already).
GRACE_SECONDS = 5


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside the API's event loop: the API's own server owns the signals
    (SIGTERM drains it, and its lifespan then stops this one)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def metrics_app(state: AppState) -> FastAPI:
    """GET /metrics and nothing else (any other path is a problem+json 404)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return await render_metrics(state)

    return app


def bind_shared(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port that the other server processes (of this user) can
    bind too; the kernel spreads incoming connections over all of them."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serving_metrics(state: AppState) -> AsyncIterator[None]:
    """Serve /metrics on MEDIA_METRICS_HOST:MEDIA_METRICS_PORT while the block runs (nothing
    when the port is 0). The port is bound here, so one another program holds stops the start."""
    settings = state.settings
    if not settings.metrics_port:
        yield
        return
    sock = bind_shared(settings.metrics_host, settings.metrics_port)
    config = uvicorn.Config(
        metrics_app(state),
        lifespan="off",
        ws="none",
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    server = _EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(GRACE_SECONDS):
            while not server.started:
                if serving.done():
                    serving.result()  # raises what stopped it
                    raise RuntimeError("the metrics listener stopped as it started")
                await asyncio.sleep(0.01)
        log.info("serving /metrics on %s:%d", settings.metrics_host, settings.metrics_port)
        yield
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(serving, 2 * GRACE_SECONDS)
        except TimeoutError:
            log.warning("the metrics listener did not stop in time; cancelled")
        except Exception:
            log.exception("the metrics listener failed")
        finally:
            sock.close()
