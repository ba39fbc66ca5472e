"""Request and response shapes for accounts and API keys."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, EmailStr, Field

from media_api.auth.models import ApiKey


class SignupIn(BaseModel):
    email: EmailStr
    password: str = Field(min_length=10, max_length=256)


class OwnerOut(BaseModel):
    id: uuid.UUID
    email: str
    created_at: dt.datetime


class TokenOut(BaseModel):
    """OAuth2 token response (RFC 6749 section 5.1)."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class ApiKeyOut(BaseModel):
    """A key's metadata; the secret is never shown again."""

    id: uuid.UUID
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret. Shown once: store it now.")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]
