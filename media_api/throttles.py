"""Rate limits on the `limits` library: moving windows in Redis (exact), shared by every API
process (per-process memory without Redis). A Redis error or hang lets the request through:
an outage of the counters must not take the API down with it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from limits import RateLimitItem, RateLimitItemPerMinute, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

log = logging.getLogger(__name__)

Rates = Sequence[RateLimitItem]
# One warning per burst of errors, not one per request.
ERROR_LOG_INTERVAL_SECONDS = 30.0


def parse_rates(text: str) -> list[RateLimitItem]:
    """`10/minute;100/hour` as rate items; empty text is no limit."""
    if not text.strip():
        return []
    try:
        return list(parse_many(text))
    except ValueError as exc:
        raise ValueError(f"not a rate limit: {text!r} (write e.g. 10/minute;100/hour)") from exc


def per_minute(count: int) -> list[RateLimitItem]:
    """The per-owner limits' settings are counts a minute; 0 is no limit."""
    return [RateLimitItemPerMinute(count)] if count > 0 else []


class Throttle:
    """Counts hits per key against one or more windows; answers with the seconds to wait."""

    def __init__(
        self,
        storage: Storage,
        on_error: Callable[[], None] = lambda: None,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.storage = storage
        self.pool = pool
        self.limiter = MovingWindowRateLimiter(storage)
        self.on_error = on_error
        self._last_error_log = 0.0

    async def hit(self, key: str, rates: Rates) -> int | None:
        """Count one hit in every window; None when each allows it, else seconds to wait."""
        try:
            for rate in rates:
                if not await self.limiter.hit(rate, key):
                    return await self._retry_after(rate, key)
        except StorageError as exc:
            self._failed_open(exc)
        return None

    async def clear(self, key: str, rates: Rates) -> None:
        """Forget the key's hits in every window."""
        try:
            for rate in rates:
                await self.limiter.clear(rate, key)
        except StorageError as exc:
            self._failed_open(exc)

    async def _retry_after(self, rate: RateLimitItem, key: str) -> int:
        stats = await self.limiter.get_window_stats(rate, key)
        return max(1, round(stats.reset_time - time.time()))

    def _failed_open(self, exc: StorageError) -> None:
        self.on_error()
        now = time.monotonic()
        if now - self._last_error_log > ERROR_LOG_INTERVAL_SECONDS:
            self._last_error_log = now
            log.warning("rate limits unavailable, letting requests through: %r", exc.storage_error)

    async def close(self) -> None:
        """Release the storage's connections."""
        if self.pool is not None:
            await self.pool.aclose()


def create_throttle(
    redis_url: str | None, on_error: Callable[[], None], timeout: float = 0.5
) -> Throttle:
    """Redis when one is configured, else per-process memory. A hung Redis costs a request at
    most `timeout` per limit, then the request goes through."""
    if not redis_url:
        return Throttle(MemoryStorage(), on_error)
    pool = ConnectionPool.from_url(
        redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    storage = RedisStorage(
        f"async+{redis_url}",
        implementation="redispy",
        wrap_exceptions=True,
        key_prefix="media-limits",
        connection_pool=pool,  # type: ignore[arg-type]
    )
    return Throttle(storage, on_error, pool)
