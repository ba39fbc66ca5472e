"""Live updates across API processes: one connection per process `LISTEN`s on the events
channel and wakes the streams of the owner Postgres notified, which then read the outbox.

The outbox is the source, a notification only a wake-up: while the connection is down (it is
made again every few seconds) the streams still read at each heartbeat, and once it is back
every stream is woken, for what was committed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from media_api.events import statements
from media_api.settings import Settings

log = logging.getLogger(__name__)

# Between attempts to connect again, and between checks that a quiet connection still answers
# (a connection cut without a FIN is only found by using it).
RECONNECT_SECONDS = 2.0
CHECK_SECONDS = 30.0


def listen_dsn(settings: Settings) -> str:
    """The database URL as asyncpg's own `connect` takes it (no SQLAlchemy driver name)."""
    url = make_url(settings.async_database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """This process's `LISTEN` connection and the streams it wakes, by owner."""

    def __init__(self, dsn: str, connect_timeout: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        # Per owner, the wake-up of each of its open streams; gone with the last one.
        self._streams: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Connect and listen in the background (the app starts even if Postgres is down)."""
        self._task = asyncio.create_task(self._run(), name="events-listener")

    async def stop(self) -> None:
        """Close the connection; streams still open fall back on their heartbeat reads."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.contextmanager
    def subscribe(self, owner_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """A wake-up set whenever one of the owner's events may have committed."""
        key = str(owner_id)
        woken = asyncio.Event()
        self._streams.setdefault(key, set()).add(woken)
        try:
            yield woken
        finally:
            streams = self._streams.get(key)
            if streams is not None:
                streams.discard(woken)
                if not streams:
                    del self._streams[key]

    @property
    def owners(self) -> int:
        """Owners with a stream open in this process."""
        return len(self._streams)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for woken in self._streams.get(payload, ()):
            woken.set()

    def _wake_all(self) -> None:
        for streams in self._streams.values():
            for woken in streams:
                woken.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("events listener: %s; connecting again", type(exc).__name__)
            finally:
                self.connected.clear()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        """Hold one connection until it is lost."""
        conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(statements.CHANNEL, self._notified)
            self.connected.set()
            self._wake_all()  # what was committed while nothing listened
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHECK_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
        finally:
            conn.terminate()
