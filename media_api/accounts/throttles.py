"""Rate limits on the `limits` library: moving windows in Redis (exact), shared by every API
process (per-process memory without Redis). A Redis error or hang lets the request through:
an outage of the counters must not take the API down with it."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from media_api.errors import RateLimited
from media_api.settings import Settings, parse_rates

log = logging.getLogger(__name__)

Rates = Sequence[RateLimitItem]
# One warning per burst of errors, not one per request.
ERROR_LOG_INTERVAL_SECONDS = 30.0


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


def _account(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


class AuthThrottles:
    """The auth routes' limits, parsed once from settings."""

    def __init__(self, throttle: Throttle, settings: Settings) -> None:
        self.throttle = throttle
        self.per_address = parse_rates(settings.rate_limit_auth_per_address)
        self.per_account = parse_rates(settings.rate_limit_login_per_account)
        self.failures = parse_rates(settings.rate_limit_login_failures_per_account)

    async def before_signup(self, address: str) -> None:
        """Counts against the address's budget; raises 429 when it is spent."""
        await self._hit(f"auth:address:{address}", self.per_address, "from this address")

    async def before_login(self, address: str, email: str) -> None:
        """Address and account budgets, then the account's failure backoff. Every attempt
        counts as a failure until it succeeds (`login_succeeded` forgets them), so a burst of
        concurrent guesses cannot all slip through before the first is counted."""
        account = _account(email)
        await self._hit(f"auth:address:{address}", self.per_address, "from this address")
        await self._hit(f"auth:account:{account}", self.per_account, "for this account")
        retry_after = await self.throttle.hit(f"auth:failures:{account}", self.failures)
        if retry_after is not None:
            raise RateLimited("too many failed sign-ins for this account", retry_after)

    async def login_succeeded(self, email: str) -> None:
        """The right password: the account's failures are forgiven."""
        await self.throttle.clear(f"auth:failures:{_account(email)}", self.failures)

    async def _hit(self, key: str, rates: Rates, where: str) -> None:
        retry_after = await self.throttle.hit(key, rates)
        if retry_after is not None:
            raise RateLimited(f"too many sign-in or sign-up attempts {where}", retry_after)
