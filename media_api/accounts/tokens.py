"""Credentials as data: API keys and access tokens. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

KEY_MARK = "mk"  # recognisable by secret scanners and by people: "mk_<prefix>_<secret>"


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: `token` is shown once, only `prefix` and `secret_hash` are kept."""

    token: str
    prefix: str
    secret_hash: bytes


def _hash(token: str) -> bytes:
    # The secret carries 256 random bits, so a fast hash is enough: there is nothing to
    # brute-force, and verification stays cheap on every request.
    return hashlib.sha256(token.encode()).digest()


def new_api_key() -> NewKey:
    """A new random key."""
    prefix = secrets.token_hex(6)
    token = f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(token=token, prefix=prefix, secret_hash=_hash(token))


def key_prefix(token: str) -> str | None:
    """The lookup prefix of a well-formed key, else None (not an API key)."""
    mark, sep, rest = token.partition("_")
    prefix, sep2, secret = rest.partition("_")
    if mark != KEY_MARK or not sep or not sep2 or len(prefix) != 12 or not secret:
        return None
    return prefix


def verify_api_key(token: str, secret_hash: bytes) -> bool:
    """Constant-time comparison against the stored hash."""
    return hmac.compare_digest(_hash(token), secret_hash)


# --- access tokens (JWT) ---------------------------------------------------------------------

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "media-service"


def issue_access_token(owner_id: uuid.UUID, secret: str, ttl_seconds: int) -> str:
    """A short-lived signed token naming the owner; nothing else is trusted from it."""
    now = int(time.time())
    claims = {"sub": str(owner_id), "iss": JWT_ISSUER, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def owner_from_access_token(token: str, secret: str) -> uuid.UUID | None:
    """The owner a valid, unexpired token names, else None (any defect reads the same)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            issuer=JWT_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
        return uuid.UUID(str(claims["sub"]))
    except (jwt.InvalidTokenError, ValueError):
        return None
