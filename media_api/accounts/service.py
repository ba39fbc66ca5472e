"""Authentication rules: accounts, access tokens, API keys, and who is calling."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import Executor

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from media_api.accounts import passwords, repository, tokens
from media_api.accounts.models import ApiKey, Owner
from media_api.errors import MediaError, NotFound


class Unauthorized(MediaError):
    status_code = 401
    code = "unauthorized"
    title = "Unauthorized"
    response_headers = {
        "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
    }

    def __init__(self, detail: str = "Missing or invalid credentials.") -> None:
        super().__init__(detail)
        self.headers["WWW-Authenticate"] = "Bearer"


class InvalidCredentials(Unauthorized):
    code = "invalid-credentials"
    title = "Invalid credentials"


class EmailTaken(MediaError):
    status_code = 409
    code = "email-taken"
    title = "Email already registered"


class SignupClosed(MediaError):
    status_code = 403
    code = "signup-closed"
    title = "Sign-up is closed"


class AccountExists(MediaError):
    status_code = 409
    code = "account-exists"
    title = "Account exists"


async def signup(
    session: AsyncSession, hashing: Executor | None, email: str, password: str
) -> Owner:
    """A new account; the password is stored only as an Argon2id hash (hashed on `hashing`)."""
    loop = asyncio.get_running_loop()
    encoded = await loop.run_in_executor(hashing, passwords.hash_password, password)
    try:
        async with session.begin_nested():
            return await repository.add_owner(session, email.lower(), encoded)
    except IntegrityError as exc:
        raise EmailTaken(f"{email} already has an account") from exc


async def login(
    session: AsyncSession, hashing: Executor, email: str, password: str, secret: str, ttl: int
) -> str:
    """An access token for correct credentials; one error for every kind of wrong, after the
    same work: an unknown email (or one without a password) verifies against a dummy hash."""
    owner = await repository.owner_by_email(session, email.lower())
    encoded = owner.password_hash if owner else None
    loop = asyncio.get_running_loop()
    verified = await loop.run_in_executor(hashing, passwords.verify_password, password, encoded)
    if owner is None or not verified:
        raise InvalidCredentials("wrong email or password")
    return tokens.issue_access_token(owner.id, secret, ttl)


async def owner_for_token(session: AsyncSession, token: str, secret: str | None) -> uuid.UUID:
    """The owner behind an API key (`mk_...`) or an access token; any failure is one 401."""
    prefix = tokens.key_prefix(token)
    if prefix is not None:
        key = await repository.active_key_by_prefix(session, prefix)
        if key is None or not tokens.verify_api_key(token, key.secret_hash):
            raise Unauthorized()
        await repository.touch_key(session, key.id)
        return key.owner_id
    owner_id = tokens.owner_from_access_token(token, secret) if secret else None
    if owner_id is None or not await repository.owner_exists(session, owner_id):
        raise Unauthorized()
    return owner_id


async def whoami(session: AsyncSession, owner_id: uuid.UUID) -> Owner:
    """The caller's account (its credential was checked, so it exists unless just deleted)."""
    owner = await repository.owner_by_id(session, owner_id)
    if owner is None:
        raise NotFound("account not found")
    return owner


async def update_settings(
    session: AsyncSession, owner_id: uuid.UUID, changes: dict[str, object]
) -> Owner:
    """Change the caller's account settings (the fields sent)."""
    owner = await whoami(session, owner_id)
    for name, value in changes.items():
        setattr(owner, name, value)
    await session.flush()
    return owner


async def issue_key(session: AsyncSession, owner_id: uuid.UUID, name: str) -> tuple[ApiKey, str]:
    """A new API key row and its token; the token is returned once and never stored."""
    key = tokens.new_api_key()
    row = await repository.add_api_key(session, owner_id, name, key.prefix, key.secret_hash)
    return row, key.token


async def list_keys(session: AsyncSession, owner_id: uuid.UUID) -> list[ApiKey]:
    """The owner's active keys (metadata only)."""
    return await repository.list_keys(session, owner_id)


async def revoke_key(session: AsyncSession, owner_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke at once; another owner's key id reads as absent."""
    if not await repository.revoke_key(session, owner_id, key_id):
        raise NotFound("API key not found")


async def create_owner_with_key(
    session: AsyncSession, email: str, key_name: str = "default"
) -> tuple[uuid.UUID, str]:
    """A new owner (no password) and an API key for it (tests and bootstrap)."""
    owner = await repository.add_owner(session, email)
    _, token = await issue_key(session, owner.id, key_name)
    return owner.id, token


async def key_for_email(
    session: AsyncSession, email: str, key_name: str, *, existing: bool = False
) -> str:
    """An API key for the owner with this email, creating the owner if new (bootstrap). An
    account that has a password gets one only when `existing` says that is meant."""
    owner = await repository.owner_by_email(session, email.lower())
    if owner is None:
        owner = await repository.add_owner(session, email.lower())
    elif owner.password_hash is not None and not existing:
        raise AccountExists(f"{email} already has an account with a password")
    _, token = await issue_key(session, owner.id, key_name)
    return token


async def is_valid_key(session: AsyncSession, token: str) -> bool:
    """True when the API key authenticates (the dev command reuses a saved key if so)."""
    try:
        await owner_for_token(session, token, secret=None)
    except Unauthorized:
        return False
    return True
