"""asyncio helpers the request paths share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def run_to_the_end(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run `cleanup` to its end even if the caller is cancelled meanwhile (once or again), then
    let the cancellation go on. `asyncio.shield` alone would return at a cancel and leave the
    cleanup running loose, past the end of the request that owns it (and of the app's
    shutdown, which waits for requests, not for loose tasks)."""
    task = asyncio.ensure_future(cleanup)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            cancelled = exc
    task.result()
    if cancelled is not None:
        raise cancelled
