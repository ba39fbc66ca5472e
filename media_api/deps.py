"""Annotated dependencies shared by the routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.jobs import JobBuffer
from media_api.settings import Settings
from media_api.state import AppState
from media_api.storage.s3 import AsyncS3Store


def get_state(request: Request) -> AppState:
    """The resources the lifespan opened."""
    state: AppState = request.app.state.media
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    """Settings of this app instance (never a module global)."""
    return state.settings


def get_store(state: StateDep) -> AsyncS3Store:
    """The S3 adapter."""
    return state.store


def get_jobs(state: StateDep) -> JobBuffer:
    """A fresh buffer per request; `get_session` publishes it after commit."""
    return JobBuffer(state.producer)


JobsDep = Annotated[JobBuffer, Depends(get_jobs)]


async def get_session(state: StateDep, jobs: JobsDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: commit, then publish the jobs it queued."""
    async with state.sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            jobs.discard()
            await session.rollback()
            raise
    if jobs.pending:
        await asyncio.to_thread(jobs.flush)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[AsyncS3Store, Depends(get_store)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
