"""HTTP routes for accounts, tokens and API keys."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, status

from media_api.accounts import service
from media_api.accounts.models import Owner
from media_api.accounts.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyList,
    ApiKeyOut,
    OwnerOut,
    OwnerPatch,
    SignupIn,
    TokenForm,
    TokenOut,
)
from media_api.accounts.service import EmailTaken, InvalidCredentials, SignupClosed
from media_api.api.deps import (
    ClientAddress,
    CurrentOwner,
    SessionDep,
    StateDep,
    api_rate_limit,
)
from media_api.errors import NotFound, RateLimited, problem_responses

auth_router = APIRouter(prefix="/v1/auth", tags=["auth"])
keys_router = APIRouter(
    prefix="/v1/api-keys", tags=["auth"], dependencies=[Depends(api_rate_limit)]
)


@auth_router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(SignupClosed, EmailTaken, RateLimited),
)
async def signup(
    body: SignupIn, session: SessionDep, state: StateDep, address: ClientAddress
) -> OwnerOut:
    """Create an account (email and password); 403 when sign-up is closed."""
    if state.settings.signup == "closed":
        raise SignupClosed("accounts are created by the operator (media-api create-user)")
    await state.auth_throttles.before_signup(address)
    owner = await service.signup(session, state.hashing, body.email, body.password)
    return _owner_out(owner)


@auth_router.post("/token", responses=problem_responses(InvalidCredentials, RateLimited))
async def token(
    form: Annotated[TokenForm, Form()],
    session: SessionDep,
    state: StateDep,
    address: ClientAddress,
) -> TokenOut:
    """OAuth2 password flow: `username` is the email; returns a short-lived bearer token."""
    settings = state.settings
    ttl = settings.access_token_ttl_seconds
    await state.auth_throttles.before_login(address, form.username)
    access = await service.login(
        session, state.hashing, form.username, form.password, settings.jwt_secret, ttl
    )
    await state.auth_throttles.login_succeeded(form.username)
    return TokenOut(access_token=access, expires_in=ttl)


@auth_router.get(
    "/me", dependencies=[Depends(api_rate_limit)], responses=problem_responses(NotFound)
)
async def me(owner: CurrentOwner, session: SessionDep) -> OwnerOut:
    """The account the credential belongs to (the web page shows who is signed in)."""
    return _owner_out(await service.whoami(session, owner))


@auth_router.patch(
    "/me", dependencies=[Depends(api_rate_limit)], responses=problem_responses(NotFound)
)
async def update_me(body: OwnerPatch, owner: CurrentOwner, session: SessionDep) -> OwnerOut:
    """Change the account's settings: `expose_location` shows photos' GPS positions."""
    changes = body.model_dump(exclude_unset=True)
    return _owner_out(await service.update_settings(session, owner, changes))


def _owner_out(row: Owner) -> OwnerOut:
    return OwnerOut(
        id=row.id,
        email=row.email,
        created_at=row.created_at,
        expose_location=row.expose_location,
    )


@keys_router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(body: ApiKeyIn, owner: CurrentOwner, session: SessionDep) -> ApiKeyCreated:
    """A long-lived key for programs; the secret is in this response only."""
    row, secret = await service.issue_key(session, owner, body.name)
    return ApiKeyCreated(**ApiKeyOut.of(row).model_dump(), key=secret)


@keys_router.get("")
async def list_keys(owner: CurrentOwner, session: SessionDep) -> ApiKeyList:
    """The caller's active keys."""
    return ApiKeyList(items=[ApiKeyOut.of(k) for k in await service.list_keys(session, owner)])


@keys_router.delete(
    "/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(NotFound)
)
async def revoke_key(key_id: uuid.UUID, owner: CurrentOwner, session: SessionDep) -> None:
    """Revoke a key; requests using it fail from now on."""
    await service.revoke_key(session, owner, key_id)
