"""Password hashing with Argon2id (argon2-cffi defaults, RFC 9106 low-memory profile).

Hashing is deliberately slow CPU work: callers run it in a thread, never on the event loop.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("not a real password, only here to spend the same time")


def hash_password(password: str) -> str:
    """An encoded Argon2id hash (parameters and salt included)."""
    return _hasher.hash(password)


def verify_password(password: str, encoded: str | None) -> bool:
    """Constant-cost check; an unknown account (None) still spends one verification."""
    try:
        return _hasher.verify(encoded or _DUMMY_HASH, password) and encoded is not None
    except (VerificationError, InvalidHashError):
        return False
