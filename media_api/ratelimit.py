"""Per-owner rate limits: fixed one-minute windows counted in Redis.

A fixed window is the simplest limiter that is exact across processes (one INCR per request);
its known weakness, up to twice the limit across a window boundary, is acceptable for abuse
protection. Without Redis, each process counts on its own (documented in the README).
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis

WINDOW_SECONDS = 60


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int) -> int | None:
        """Count one hit; None when allowed, else seconds until the window resets."""

    async def close(self) -> None:
        """Release connections."""


def _window(now: float) -> tuple[int, int]:
    start = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
    return start, start + WINDOW_SECONDS


class RedisRateLimiter:
    """Counters shared by every API process through Redis."""

    def __init__(self, url: str) -> None:
        self.redis: Redis = Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    async def hit(self, key: str, limit: int) -> int | None:
        start, end = _window(time.time())
        name = f"ratelimit:{key}:{start}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, WINDOW_SECONDS + 5)
            count, _ = await pipe.execute()
        if int(count) > limit:
            return max(1, int(end - time.time()) + 1)
        return None

    async def close(self) -> None:
        await self.redis.aclose()


class MemoryRateLimiter:
    """Per-process counters, for deployments without Redis."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def hit(self, key: str, limit: int) -> int | None:
        start, end = _window(time.time())
        name = f"{key}:{start}"
        if len(self.counts) > 100_000:  # old windows: drop them all, cheaply
            self.counts = {k: v for k, v in self.counts.items() if k.endswith(f":{start}")}
        self.counts[name] = self.counts.get(name, 0) + 1
        if self.counts[name] > limit:
            return max(1, int(end - time.time()) + 1)
        return None

    async def close(self) -> None:
        return None


def create_limiter(redis_url: str | None) -> RateLimiter:
    """Redis when one is configured, else per-process memory."""
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()
