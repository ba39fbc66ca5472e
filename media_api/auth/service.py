"""Authentication rules: who is calling."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from media_api.auth import repository, tokens
from media_api.errors import MediaError


class Unauthorized(MediaError):
    status_code = 401
    code = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str = "Missing or invalid credentials.") -> None:
        super().__init__(detail)
        self.headers["WWW-Authenticate"] = "Bearer"


async def owner_for_token(session: AsyncSession, token: str) -> uuid.UUID:
    """The owner an API key belongs to; any failure is the same 401 (no oracle)."""
    prefix = tokens.key_prefix(token)
    if prefix is None:
        raise Unauthorized()
    key = await repository.active_key_by_prefix(session, prefix)
    if key is None or not tokens.verify_api_key(token, key.secret_hash):
        raise Unauthorized()
    await repository.touch_key(session, key.id)
    return key.owner_id


async def create_owner_with_key(
    session: AsyncSession, email: str, key_name: str = "default"
) -> tuple[uuid.UUID, str]:
    """A new owner and an API key for it (used by `media-api dev` and tests)."""
    owner = await repository.add_owner(session, email)
    return owner.id, await issue_key(session, owner.id, key_name)


async def issue_key(session: AsyncSession, owner_id: uuid.UUID, name: str) -> str:
    """A new API key for an owner; the token is returned once and never stored."""
    key = tokens.new_api_key()
    await repository.add_api_key(session, owner_id, name, key.prefix, key.secret_hash)
    return key.token


async def key_for_email(session: AsyncSession, email: str, key_name: str) -> str:
    """An API key for the owner with this email, creating the owner if needed (bootstrap)."""
    owner = await repository.owner_by_email(session, email)
    if owner is None:
        owner = await repository.add_owner(session, email)
    return await issue_key(session, owner.id, key_name)


async def is_valid_key(session: AsyncSession, token: str) -> bool:
    """True when the token authenticates (the dev command reuses a saved key if so)."""
    try:
        await owner_for_token(session, token)
    except Unauthorized:
        return False
    return True
