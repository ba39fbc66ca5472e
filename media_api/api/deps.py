"""Annotated dependencies shared by the routers."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError
from sqlalchemy.ext.asyncio import AsyncSession

from media_api import logs
from media_api.accounts import throttles
from media_api.accounts.service import Unauthorized, owner_for_token
from media_api.errors import RateLimited, ServiceUnavailable, raises
from media_api.jobs.producer import JobProducer
from media_api.pagination import MAX_LIMIT
from media_api.resources import AppState
from media_api.settings import Settings
from media_api.storage.s3 import AsyncS3Store
from media_api.storage.signing import Signer
from media_api.text import single_line
from media_api.unit_of_work import UnitOfWork


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


def get_unit_of_work(state: StateDep) -> UnitOfWork:
    """Fresh per request; `get_session` settles it once the transaction's outcome is known."""
    return UnitOfWork(JobProducer(state.producer), request_id=logs.request_id.get())


UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]


@raises(ServiceUnavailable)  # the database is down or has no free connection
async def get_session(state: StateDep, uow: UnitOfWorkDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: commit and publish, or roll back and compensate."""
    async with state.sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            await uow.rolled_back()
            raise
    await uow.committed()


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_signer(state: StateDep) -> Signer:
    """Presigns URLs with the configured lifetime."""
    ttl = dt.timedelta(seconds=state.settings.signed_url_ttl_seconds)
    return Signer(state.store, ttl, on_sign=state.metrics.signed_urls.inc)


SignerDep = Annotated[Signer, Depends(get_signer)]
StoreDep = Annotated[AsyncS3Store, Depends(get_store)]
# scope="function": commit before the response is sent, so a 201 means durable.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


_bearer = HTTPBearer(auto_error=False, description="An API key (mk_...) or an access token.")


@raises(Unauthorized)
async def current_owner(
    state: StateDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> uuid.UUID:
    """The caller's owner id; every query a route makes is scoped to it."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    return await owner_for_token(session, credentials.credentials, state.settings.jwt_secret)


CurrentOwner = Annotated[uuid.UUID, Depends(current_owner)]


async def _limit(state: AppState, bucket: str, owner: uuid.UUID, per_minute: int) -> None:
    retry_after = await state.throttle.hit(f"{bucket}:{owner}", throttles.per_minute(per_minute))
    if retry_after is not None:
        raise RateLimited(f"more than {per_minute} {bucket} requests a minute", retry_after)


@raises(RateLimited)
async def api_rate_limit(state: StateDep, owner: CurrentOwner) -> None:
    """Every authenticated request counts against the owner's per-minute budget."""
    await _limit(state, "api", owner, state.settings.rate_limit_requests_per_minute)


@raises(RateLimited)
async def upload_rate_limit(state: StateDep, owner: CurrentOwner) -> None:
    """Uploads (and reprocessing, which costs as much) have their own, smaller budget."""
    await _limit(state, "upload", owner, state.settings.rate_limit_uploads_per_minute)


def client_address(request: Request) -> str:
    """The caller's address, the unit of the per-address limits: IPv6 by its /64 (one host
    gets a whole /64), IPv4 as is. uvicorn reads X-Forwarded-For from trusted proxies only
    (FORWARDED_ALLOW_IPS)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


ClientAddress = Annotated[str, Depends(client_address)]


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    """What `format: date-time` promises and no more: pydantic alone would also take `0.5` (a
    Unix time) or a time without an offset (whose zone would be a guess)."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "datetime_format",
            "must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z",
        )
    return value


def _representable(value: dt.datetime) -> dt.datetime:
    """A time whose UTC instant exists: year 1 at +14:00 is year 0 in UTC, which no database
    (nor Python) can hold."""
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range", "must fall between years 1 and 9999 in UTC"
        ) from None


# Query parameters the listings share.
DateTime = Annotated[dt.datetime, BeforeValidator(_rfc3339), AfterValidator(_representable)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page"), single_line]
Tag = Annotated[str | None, Query(max_length=100, description="e.g. cat"), single_line]
