"""Validation of spooled uploads in a small pool of processes (pebble), outside the API's own.

At most `max_concurrent_validations` run at once; an upload waits `validation_wait_seconds`
for a slot, then gets 503. A validation past `validation_timeout_seconds` is refused 422 and
its process is killed and replaced, so abandoned decodes never pile up; a decoder that crashes
takes down only its pool process. The child reopens the spool through /proc (it has no name).
An upload may also be followed: decoded while its bytes arrive, in slots of its own (`follow`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import Future
from typing import IO

from pebble import ProcessExpired, ProcessPool

from media_api.errors import ServerBusy
from media_api.imaging import growing
from media_api.imaging import probe as imaging
from media_api.settings import Settings

# A pool process is replaced after this many validations: large decodes fragment its heap.
TASKS_PER_PROCESS = 100


class Validator:
    """Owns two pools, one for uploads validated after their last byte and one for followed
    uploads; a pool's processes start when it is first used, not with the app."""

    def __init__(self, settings: Settings) -> None:
        self.limits = settings.probe_limits
        self.timeout = settings.validation_timeout_seconds
        self.wait = settings.validation_wait_seconds
        self.slots = asyncio.Semaphore(settings.max_concurrent_validations)
        # Followed uploads hold their own processes, so slow senders never hold up the rest.
        self.follow_slots = settings.max_concurrent_validations if settings.follow_uploads else 0
        self.following = 0
        self.processes = settings.max_concurrent_validations
        self.pool = self._new_pool(self.processes)
        self.follow_pool = self._new_pool(max(1, self.follow_slots))

    @staticmethod
    def _new_pool(processes: int) -> ProcessPool:
        # spawn, not fork: the API process has threads (and locks held by them).
        return ProcessPool(
            max_workers=processes,
            max_tasks=TASKS_PER_PROCESS,
            context=multiprocessing.get_context("spawn"),
        )

    async def precheck(self, spool: IO[bytes]) -> None:
        """Refusals that need no decoder (JPEG scans), in a thread of this process: a scan
        bomb is turned away before a decoder starts on it after its last byte."""
        await asyncio.to_thread(imaging.check_jpeg_scans, spool, self.limits)

    def follow(self, spool: IO[bytes]) -> Following | None:
        """Start decoding the spool while the upload still writes it; None when every slot
        for that is taken (the upload is then validated after its last byte, as usual)."""
        if self.following >= self.follow_slots:
            return None
        self.follow_pool = _working(self.follow_pool, self.follow_slots)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        pid = os.getpid()
        future = self.follow_pool.schedule(
            imaging.probe_growing,
            args=(f"/proc/{pid}/fd/{spool.fileno()}", f"/proc/{pid}/fd/{read_fd}", self.limits),
            kwargs={"cpu_seconds": self.timeout},
        )
        self.following += 1
        return Following(self, future, read_fd, write_fd)

    async def validate(self, spool: IO[bytes]) -> imaging.ImageInfo:
        """Probe the spooled file; a `ProbeError` for every refusal."""
        try:
            async with asyncio.timeout(self.wait):
                await self.slots.acquire()
        except TimeoutError:
            raise ServerBusy("every validation slot is taken; retry shortly") from None
        try:
            path = f"/proc/{os.getpid()}/fd/{spool.fileno()}"
            self.pool = _working(self.pool, self.processes)
            future = self.pool.schedule(
                imaging.probe, args=(path, self.limits), timeout=self.timeout
            )
            return await self.outcome(future, wall_time=None)  # pebble's timeout applies
        finally:
            self.slots.release()

    async def outcome(
        self, future: Future[imaging.ImageInfo], *, wall_time: float | None
    ) -> imaging.ImageInfo:
        """A pool validation's answer, its failures as refusals; within `wall_time` from now."""
        try:
            # A cancelled request cancels the future, and pebble kills the process.
            async with asyncio.timeout(wall_time):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise imaging.ImageTooLarge(
                f"decoding took longer than {self.timeout:g} s; the image is too costly"
            ) from None
        except ProcessExpired as exc:
            # A decoder crashed on these bytes (its process died, the API did not).
            raise imaging.CorruptImage("the image data crashed the decoder") from exc

    def close(self) -> None:
        """Stop the pools' processes (blocking; the lifespan calls it in a thread)."""
        _stop(self.pool)
        _stop(self.follow_pool)


class Following:
    """One upload decoded as it arrives: told of progress and of the end, then asked for the
    answer; `close` (always, also on abandon) stops the decode and frees the slot."""

    def __init__(
        self, validator: Validator, future: Future[imaging.ImageInfo], read_fd: int, write_fd: int
    ) -> None:
        self._validator = validator
        self._future = future
        self._read_fd = read_fd
        self._write_fd: int | None = write_fd

    def progressed(self) -> None:
        if self._write_fd is not None:
            growing.progressed(self._write_fd)

    def finished(self, size: int) -> None:
        if self._write_fd is not None:
            growing.finished(self._write_fd, size)

    async def result(self) -> imaging.ImageInfo:
        """The decode's answer, within the validation time budget counted from now."""
        try:
            return await self._validator.outcome(self._future, wall_time=self._validator.timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self._write_fd is None:
            return
        self._future.cancel()  # pebble kills a process still decoding
        os.close(self._write_fd)
        os.close(self._read_fd)
        self._write_fd = None
        self._validator.following -= 1


def _working(pool: ProcessPool, processes: int) -> ProcessPool:
    """The pool, or a new one if it broke or an earlier lifespan closed it (stopped aside)."""
    if pool.active:
        return pool
    asyncio.get_running_loop().run_in_executor(None, _stop, pool)
    return Validator._new_pool(processes)


def _stop(pool: ProcessPool) -> None:
    pool.stop()  # type: ignore[no-untyped-call]
    pool.join(timeout=10)
