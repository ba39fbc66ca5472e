"""What the lifespan opens once per process and every request shares."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from media_api.metrics import ApiMetrics
from media_api.ratelimit import RateLimiter
from media_api.settings import Settings
from media_api.storage.s3 import AsyncS3Store


@dataclass
class AppState:
    """Long-lived resources, opened by the lifespan and closed with it."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: AsyncS3Store
    producer: Celery
    limiter: RateLimiter
    metrics: ApiMetrics
