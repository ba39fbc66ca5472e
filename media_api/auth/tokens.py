"""API key format, generation and verification: pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

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
