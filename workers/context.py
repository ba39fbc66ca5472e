"""Per-process resources of a worker: a sync engine and S3 client, made after the fork.

Prefork children must not share the parent's connections, so everything is created lazily
in the process that uses it and cached per pid.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from media_api.jobs.producer import JobProducer, create_producer
from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from workers import events


@dataclass
class WorkerContext:
    """What a task needs: settings, a session factory and the object store."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: S3Store


_contexts: dict[tuple[int, str], WorkerContext] = {}


def context(settings: Settings) -> WorkerContext:
    """This process's context for this database (created on first use after a fork)."""
    pid = (os.getpid(), settings.sync_database_url)
    ctx = _contexts.get(pid)
    if ctx is None:
        engine = create_engine(
            settings.sync_database_url,
            pool_pre_ping=True,
            pool_size=2,
            # libpq's, whole seconds: a silent database is retried by the job, not waited on.
            connect_args={"connect_timeout": max(1, round(settings.db_connect_timeout_seconds))},
        )
        sessions = sessionmaker(engine, expire_on_commit=False)
        # Events' webhook deliveries leave after their commit, through a publisher made on
        # first use (most sessions announce nothing that has an endpoint).
        producer = functools.cache(lambda: JobProducer(create_producer(settings)))
        events.send_on_commit(sessions, producer)
        ctx = WorkerContext(
            settings=settings, engine=engine, sessions=sessions, store=S3Store(settings)
        )
        _contexts[pid] = ctx
    return ctx
