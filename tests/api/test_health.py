"""Liveness, readiness and the problem+json error contract."""

from __future__ import annotations

import asyncio
import errno
import logging
import socketserver
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url, text

from media_api.api.deps import SessionDep
from media_api.dev.stack import free_port
from media_api.errors import PROBLEM_JSON
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.callers import new_caller


def test_healthz(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz_checks_every_dependency(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"] == {"database": "ok", "storage": "ok", "broker": "ok"}


@pytest.mark.parametrize(
    ("setting", "broken", "part"),
    [
        ("database_url", "postgresql://postgres@127.0.0.1:{port}/media", "database"),
        ("s3_endpoint_url", "http://127.0.0.1:{port}", "storage"),
        ("broker_url", "redis://127.0.0.1:{port}/0", "broker"),
    ],
)
def test_readyz_names_the_failing_part(
    settings: Settings, setting: str, broken: str, part: str
) -> None:
    bad = settings.model_copy(
        update={setting: broken.format(port=free_port()), "readiness_timeout_seconds": 1.0}
    )
    with TestClient(create_app(bad)) as client:
        resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.headers["content-type"] == PROBLEM_JSON
    body = resp.json()
    assert body["code"] == "not-ready"
    assert part in body["detail"]
    assert body["checks"][part] != "ok"
    healthy = {name for name, state in body["checks"].items() if state == "ok"}
    assert healthy == {"database", "storage", "broker"} - {part}


class FakePostgres(socketserver.ThreadingTCPServer):
    """Just enough of Postgres's wire protocol to refuse a connection: it declines SSL, reads
    the startup message, then answers with `answer` (an ErrorResponse), or never answers."""

    daemon_threads = True

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.closing = threading.Event()
        super().__init__(("127.0.0.1", 0), _FakePostgresHandler)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.server_address[1]}/media"

    @staticmethod
    def error(sqlstate: str, message: str) -> bytes:
        fields = b"".join(
            kind + text.encode() + b"\0"
            for kind, text in ((b"S", "FATAL"), (b"C", sqlstate), (b"M", message))
        )
        return b"E" + struct.pack("!I", len(fields) + 5) + fields + b"\0"


class _FakePostgresHandler(socketserver.BaseRequestHandler):
    SSL_REQUEST = 80877103

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, FakePostgres)
        while True:  # an SSLRequest (declined), then the StartupMessage
            (length,) = struct.unpack("!I", self._read(4))
            body = self._read(length - 4)
            if struct.unpack("!I", body[:4])[0] != self.SSL_REQUEST:
                break
            self.request.sendall(b"N")
        if server.answer is None:
            server.closing.wait()  # silence, until the test is over
        else:
            self.request.sendall(server.answer)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the client went away")
            data += chunk
        return data


@contextmanager
def fake_postgres(answer: bytes | None) -> Iterator[FakePostgres]:
    server = FakePostgres(answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def full_database(settings: Settings) -> Iterator[str]:
    """The real test server, as a role whose connection limit is reached (0): Postgres refuses
    it with the same SQLSTATE (53300) as a server at max_connections."""
    role, password = f"media_full_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    url = make_url(settings.require("database_url"))
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0 PASSWORD '{password}'")
    try:
        yield url.set(username=role, password=password).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def _assert_503_for_every_route(down: TestClient, key: str) -> None:
    for resp in (
        down.get("/v1/images", headers={"Authorization": f"Bearer {key}"}),
        down.post("/v1/auth/token", data={"username": "a@example.com", "password": "x" * 12}),
    ):
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"] == PROBLEM_JSON
        assert resp.headers["retry-after"] == "5"
        assert resp.json()["code"] == "service-unavailable"
        assert "postgres" not in resp.text.lower()


@contextmanager
def _url_of(fake: AbstractContextManager[FakePostgres]) -> Iterator[str]:
    with fake as server:
        yield server.url


# What each outage raises, as found by pointing asyncpg (through SQLAlchemy 2.1) at it.
OUTAGES: dict[str, Callable[[Settings], AbstractContextManager[str]]] = {
    # ConnectionRefusedError, raw: nothing listens on the port.
    "refused": lambda _: nullcontext(f"postgresql://postgres@127.0.0.1:{free_port()}/media"),
    # socket.gaierror, raw: the host is not in DNS (compose: the postgres container is stopped).
    "not-in-dns": lambda _: nullcontext("postgresql://postgres@no-such-host.invalid/media"),
    # DBAPIError (not OperationalError) wrapping asyncpg's CannotConnectNowError.
    "starting-up": lambda _: _url_of(
        fake_postgres(FakePostgres.error("57P03", "the database system is starting up"))
    ),
    # DBAPIError wrapping asyncpg's TooManyConnectionsError.
    "full": full_database,
}


@pytest.mark.parametrize("outage", OUTAGES)
def test_an_unreachable_database_is_503_with_retry_after(
    settings: Settings, client: TestClient, outage: str
) -> None:
    key = new_caller(client).token  # a real key: checking it needs the database
    with (
        OUTAGES[outage](settings) as url,
        TestClient(
            create_app(settings.model_copy(update={"database_url": url})),
            raise_server_exceptions=False,
        ) as down,
    ):
        _assert_503_for_every_route(down, key)


def test_a_database_that_never_answers_is_503_once_connecting_times_out(
    settings: Settings, client: TestClient
) -> None:
    key = new_caller(client).token
    with (
        fake_postgres(answer=None) as silent,
        TestClient(
            create_app(
                settings.model_copy(
                    # asyncpg alone would wait 60 s, then raise a raw TimeoutError
                    update={"database_url": silent.url, "db_connect_timeout_seconds": 0.5}
                )
            ),
            raise_server_exceptions=False,
        ) as down,
    ):
        _assert_503_for_every_route(down, key)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        # What asyncpg's connect raises, raw, when no route leads to the database host.
        (OSError(errno.EHOSTUNREACH, "Connect call failed"), 503),
        # The upload spool's disk is full: ours to fix, not the client's to retry.
        (OSError(errno.ENOSPC, "No space left on device"), 500),
    ],
)
def test_an_os_error_is_503_only_when_a_host_is_unreachable(
    settings: Settings, error: OSError, status: int
) -> None:
    app = create_app(settings)

    @app.get("/fail")
    async def fail() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/fail")
    assert resp.status_code == status, resp.text


def test_a_driver_error_on_a_live_connection_is_a_500_not_an_outage(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    @app.get("/overlap")
    async def overlap(session: SessionDep) -> None:
        # Two statements at once on one connection: asyncpg refuses the second ("another
        # operation is in progress") with an InterfaceError. A bug, not a database outage.
        conn = await (await session.connection()).get_raw_connection()
        driver = conn.driver_connection
        assert driver is not None
        busy = asyncio.ensure_future(driver.fetchval("SELECT pg_sleep(0.2)"))
        await asyncio.sleep(0)  # the first statement is under way
        try:
            await session.execute(text("SELECT 1"))
        finally:
            await asyncio.wait([busy])

    with (
        caplog.at_level(logging.ERROR, logger="media_api.errors"),
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        resp = client.get("/overlap")
    assert resp.status_code == 500, resp.text
    assert resp.json()["code"] == "internal-error"
    (logged,) = [r for r in caplog.records if r.name == "media_api.errors"]
    assert logged.exc_info is not None  # the traceback is logged, not a one-line warning
    assert isinstance(logged.exc_info[1], sa_exc.InterfaceError)
    assert "another operation is in progress" in str(logged.exc_info[1])


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    resp = client.get("/no/such/route")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == PROBLEM_JSON
    body = resp.json()
    assert body["code"] == "not-found"
    assert body["status"] == 404
    assert body["type"].endswith("/not-found")


def test_unexpected_errors_reveal_nothing(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 in /srv/secret/path")

    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == PROBLEM_JSON
    assert resp.json()["code"] == "internal-error"
    assert "hunter2" not in resp.text
    assert "/srv/secret" not in resp.text
