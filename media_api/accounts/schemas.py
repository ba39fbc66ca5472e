"""Request and response shapes for accounts and API keys."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import MISSING, BaseModel, ConfigDict, EmailStr, Field, StrictBool

from media_api.accounts.models import ApiKey
from media_api.text import CONTROLS, encodable, single_line

# email-validator refuses the special-use domains (RFC 6761 and friends: `.test`, `.local`...),
# which no mail can reach; the pattern says so in the document, which `format: email` alone
# does not (letters as [xX] classes: the OpenAPI pattern dialect has no case-insensitive flag).
SPECIAL_USE_DOMAINS = ("arpa", "invalid", "local", "localhost", "onion", "test")
_ANY_CASE = "|".join("".join(f"[{c}{c.upper()}]" for c in name) for name in SPECIAL_USE_DOMAINS)
EMAIL_PATTERN = rf"^(?!.*[@.]({_ANY_CASE})\.?$)[^{CONTROLS}]*$"

Email = Annotated[
    EmailStr,
    single_line,
    Field(
        json_schema_extra={"pattern": EMAIL_PATTERN},
        description="Special-use domains (.test, .local, .localhost...) are refused.",
    ),
]
Password = Annotated[str, Field(min_length=10, max_length=256), encodable]


class SignupIn(BaseModel):
    email: Email
    password: Password


class TokenForm(BaseModel):
    """OAuth2 password grant (RFC 6749 section 4.3.2), as a form: `username` is the email."""

    grant_type: Annotated[str, Field(pattern="^password$")] = "password"  # a form has no null
    username: Annotated[str, Field(min_length=1, max_length=320), single_line]
    password: Annotated[str, Field(min_length=1), encodable]


class OwnerOut(BaseModel):
    id: uuid.UUID
    email: str
    created_at: dt.datetime
    expose_location: bool = Field(
        description="Whether image details show the GPS position read from photos."
    )


class OwnerPatch(BaseModel):
    """The account's settings; only the fields sent are changed (`null` is refused). Unknown
    fields are refused too: a misspelt privacy setting must not look like a success."""

    model_config = ConfigDict(extra="forbid")

    expose_location: StrictBool | MISSING = MISSING


class TokenOut(BaseModel):
    """OAuth2 token response (RFC 6749 section 5.1)."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class ApiKeyIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=100), single_line]


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
