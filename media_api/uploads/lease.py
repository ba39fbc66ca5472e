"""The lease a request holds on an upload, across API processes: taken from the row, renewed
in the background, handed over when another request asks (docs/uploads-design.md, "Lease")."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from media_api.cleanup import run_to_the_end
from media_api.errors import NotFound
from media_api.settings import Settings
from media_api.uploads import repository
from media_api.uploads.errors import UploadLocked
from media_api.uploads.models import Upload, UploadKind

# How often a request waiting for an upload looks again whether its holder let go.
TAKEOVER_POLL_SECONDS = 0.25


class LeaseLost(UploadLocked):
    """Another request took the upload over while this one wrote: nothing more is stored."""


class Hold:
    """One request's lease on an upload, renewed in the background until released. `let_go`
    is set when another request asks for the upload, or the lease is lost."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], upload_id: uuid.UUID, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.upload_id = upload_id
        self.lease_id = uuid.uuid4()
        self.duration = dt.timedelta(seconds=settings.upload_lease_seconds)
        self.let_go = asyncio.Event()
        self.lost = False

    async def renew_until_released(self) -> None:
        """The heartbeat: renew every third of the lease until released or lost. A takeover
        request only sets `let_go` (the body reader stops); the lease itself is kept until
        the holder lets go, so work past the body (sealing, finalizing) is never doubled."""
        while not self.lost:
            await asyncio.sleep(self.duration.total_seconds() / 3)
            async with self.sessions() as session:
                wanted = await repository.renew_lease(
                    session, self.upload_id, self.lease_id, self.duration
                )
                await session.commit()
            if wanted is None:
                self.lost = True
            if wanted is None or wanted:
                self.let_go.set()

    async def release(self) -> None:
        async with self.sessions() as session:
            await repository.release_lease(session, self.upload_id, self.lease_id)
            await session.commit()


@contextlib.asynccontextmanager
async def holding(
    sessions: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    settings: Settings,
    owner_id: uuid.UUID,
    upload_id: uuid.UUID,
    kind: UploadKind,
    *,
    wait_or_lock: bool = True,
) -> AsyncIterator[tuple[Upload, Hold | None]]:
    """The upload, leased to this request until the block ends. A holder is asked to let go
    and waited for up to `MEDIA_TUS_LOCK_WAIT_SECONDS`: then 423 `upload-locked`, or, with
    `wait_or_lock=False` (HEAD), the upload as stored and no hold. 404 when the owner has no
    upload of this `kind` with this id (a tus route never touches a direct upload)."""
    found = await repository.get(session, owner_id, upload_id)
    await session.commit()
    if found is None or found.kind != kind:
        raise NotFound("upload not found")
    hold = Hold(sessions, upload_id, settings)
    deadline = asyncio.get_running_loop().time() + settings.tus_lock_wait_seconds
    asked = False
    while True:
        upload = await repository.acquire_lease(
            session, owner_id, upload_id, hold.lease_id, hold.duration
        )
        await session.commit()
        if upload is not None:
            break
        if not asked:
            if not await repository.want_takeover(session, owner_id, upload_id):
                raise NotFound("upload not found")
            await session.commit()
            asked = True
        if asyncio.get_running_loop().time() >= deadline:
            if wait_or_lock:
                raise UploadLocked("another request is writing this upload; retry shortly")
            upload = await repository.get(session, owner_id, upload_id)
            await session.commit()
            if upload is None:
                raise NotFound("upload not found")
            yield upload, None
            return
        await asyncio.sleep(TAKEOVER_POLL_SECONDS)
    heartbeat = asyncio.create_task(hold.renew_until_released())
    try:
        yield upload, hold
    finally:
        # Whatever the block left uncommitted goes: it would hold the row the release updates.
        await run_to_the_end(session.rollback())
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        if not hold.lost:
            await run_to_the_end(hold.release())
