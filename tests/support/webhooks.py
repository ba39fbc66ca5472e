"""A webhook receiver on a local port that verifies every signature, and events announced the
way the API announces them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from media_api.events import service
from media_api.events.models import EventType
from media_api.jobs.producer import JobProducer
from media_api.resources import AppState
from media_api.unit_of_work import UnitOfWork
from tests.support.callers import Caller


@dataclass
class Received:
    """One request as the receiver saw it; `payload` is what the signature check returned."""

    headers: dict[str, str]
    body: bytes
    payload: Any


@dataclass
class Receiver:
    """Answers each POST with `answer(n)` (n counts from 1; a status), after checking its
    signature with `secret`; a request whose signature fails is answered 400 and kept in
    `bad`."""

    url: str
    answer: Callable[[int], int] = lambda _: 200
    secret: str | None = None
    received: list[Received] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            n = len(self.received) + 1
            try:
                assert self.secret is not None, "the receiver has no secret yet"
                payload = Webhook(self.secret).verify(body, headers)
            except Exception as exc:
                self.bad.append(repr(exc))
                return 400
            self.received.append(Received(headers, body, payload))
        return self.answer(n)

    def ids(self) -> list[str]:
        """The `webhook-id` of each request, in order."""
        return [r.headers["webhook-id"] for r in self.received]


@contextmanager
def receiving(answer: Callable[[int], int] = lambda _: 200) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 for the block."""

    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.handle(headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def announce(
    client: TestClient,
    caller: Caller,
    type_: EventType = EventType.IMAGE_CREATED,
    data: dict[str, Any] | None = None,
    producer: JobProducer | None = None,
) -> None:
    """Record an event for the caller as the API does (its deliveries are published after
    commit, through `producer` if given, else the app's broker)."""
    state: AppState = client.app.state.media  # type: ignore[attr-defined]
    body = data if data is not None else {"image_id": str(uuid.uuid4()), "status": "processing"}

    async def record() -> None:
        uow = UnitOfWork(producer or JobProducer(state.producer))
        async with state.sessions() as session:
            await service.announce(session, uow, caller.owner_id, type_, body)
            await session.commit()
        await uow.committed()

    assert client.portal is not None
    client.portal.call(record)
