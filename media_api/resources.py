"""What the lifespan opens once per process and every request shares."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from media_api.accounts.throttles import AuthThrottles, Throttle
from media_api.events.listener import Listener
from media_api.images.validation import Validator
from media_api.metrics import ApiMetrics
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
    throttle: Throttle
    auth_throttles: AuthThrottles
    # Password hashing only: a login flood waits here, never in the default thread pool.
    hashing: ThreadPoolExecutor
    validator: Validator
    metrics: ApiMetrics
    # This process's LISTEN connection, which wakes the event streams (GET /v1/events).
    listener: Listener
    # Finalizations of tus and direct uploads at once: each downloads its file to temp disk
    # before it waits for a validation slot, so this bounds that disk too.
    finalizing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
