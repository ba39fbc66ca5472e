"""Validation of spooled uploads in a small pool of processes (pebble), outside the API's own.

At most `max_concurrent_validations` run at once; an upload waits `validation_wait_seconds`
for a slot, then gets 503. A validation past `validation_timeout_seconds` is refused 422 and
its process is killed and replaced, so abandoned decodes never pile up; a decoder that crashes
takes down only its pool process. The child reopens the spool through /proc (it has no name).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from typing import IO

from pebble import ProcessExpired, ProcessPool

from media_api.errors import ServerBusy
from media_api.imaging import probe as imaging
from media_api.settings import Settings

# A pool process is replaced after this many validations: large decodes fragment its heap.
TASKS_PER_PROCESS = 100


class Validator:
    """Owns the pool; processes start on the first upload, not with the app."""

    def __init__(self, settings: Settings) -> None:
        self.limits = settings.probe_limits
        self.timeout = settings.validation_timeout_seconds
        self.wait = settings.validation_wait_seconds
        self.slots = asyncio.Semaphore(settings.max_concurrent_validations)
        self.processes = settings.max_concurrent_validations
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPool:
        # spawn, not fork: the API process has threads (and locks held by them).
        return ProcessPool(
            max_workers=self.processes,
            max_tasks=TASKS_PER_PROCESS,
            context=multiprocessing.get_context("spawn"),
        )

    async def precheck(self, spool: IO[bytes]) -> None:
        """Refusals that need no decoder (JPEG scans), in a thread of this process: a scan
        bomb is turned away before its object is completed in storage."""
        await asyncio.to_thread(imaging.check_jpeg_scans, spool, self.limits)

    async def validate(self, spool: IO[bytes]) -> imaging.ImageInfo:
        """Probe the spooled file; a `ProbeError` for every refusal."""
        try:
            async with asyncio.timeout(self.wait):
                await self.slots.acquire()
        except TimeoutError:
            raise ServerBusy("every validation slot is taken; retry shortly") from None
        try:
            path = f"/proc/{os.getpid()}/fd/{spool.fileno()}"
            if not self.pool.active:  # broken, or closed by an earlier lifespan: start anew
                broken, self.pool = self.pool, self._new_pool()
                asyncio.get_running_loop().run_in_executor(None, _stop, broken)
            future = self.pool.schedule(
                imaging.probe, args=(path, self.limits), timeout=self.timeout
            )
            try:
                # A cancelled request cancels the future, and pebble kills the process.
                return await asyncio.wrap_future(future)
            except TimeoutError:
                raise imaging.ImageTooLarge(
                    f"decoding took longer than {self.timeout:g} s; the image is too costly"
                ) from None
            except ProcessExpired as exc:
                # A decoder crashed on these bytes (its process died, the API did not).
                raise imaging.CorruptImage("the image data crashed the decoder") from exc
        finally:
            self.slots.release()

    def close(self) -> None:
        """Stop the pool processes (blocking; the lifespan calls it in a thread)."""
        _stop(self.pool)


def _stop(pool: ProcessPool) -> None:
    pool.stop()  # type: ignore[no-untyped-call]
    pool.join(timeout=10)
