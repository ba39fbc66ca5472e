"""Opaque, tamper-evident keyset cursors.

A cursor is the sort key of the last item of a page, as base64url JSON, followed by an HMAC
over it, the listing's scope and the owner. Clients cannot forge a position, reuse another
owner's cursor, or replay one against another listing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from media_api.errors import MediaError

DEFAULT_LIMIT = 24
MAX_LIMIT = 100


class InvalidCursor(MediaError):
    status_code = 400
    code = "invalid-cursor"
    title = "Invalid cursor"


@dataclass(frozen=True)
class Position:
    """Where the previous page ended: the keyset sort key (time, id), newest first. The time is
    `created_at`, or `taken_at` where a listing sorts by capture time (None: taken unknown)."""

    at: dt.datetime | None
    id: uuid.UUID


def _mac(secret: str, scope: str, owner_id: uuid.UUID, payload: bytes) -> bytes:
    message = b"|".join([scope.encode(), str(owner_id).encode(), payload])
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(position: Position, *, secret: str, scope: str, owner_id: uuid.UUID) -> str:
    """The cursor a client sends back for the next page."""
    payload = json.dumps(
        [position.at and position.at.isoformat(), str(position.id)], separators=(",", ":")
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, scope, owner_id, payload))}"


def decode_cursor(cursor: str, *, secret: str, scope: str, owner_id: uuid.UUID) -> Position:
    """The position a cursor names; any defect is one 400 `invalid-cursor`."""
    try:
        body, _, tag = cursor.partition(".")
        payload = _unb64(body)
        if not hmac.compare_digest(_unb64(tag), _mac(secret, scope, owner_id, payload)):
            raise InvalidCursor("the cursor was not issued for this listing")
        at, item_id = json.loads(payload)
        return Position(None if at is None else dt.datetime.fromisoformat(at), uuid.UUID(item_id))
    except InvalidCursor:
        raise
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidCursor("the cursor is malformed") from exc


class _Keyed(Protocol):
    created_at: dt.datetime
    id: uuid.UUID


T = TypeVar("T", bound=_Keyed)


@dataclass(frozen=True)
class Keyset:
    """One listing's cursors: read the incoming one, cut a page and mint the next."""

    secret: str
    scope: str
    owner_id: uuid.UUID

    def after(self, cursor: str | None) -> Position | None:
        """Where to resume, or None for the first page."""
        if not cursor:
            return None
        return decode_cursor(cursor, secret=self.secret, scope=self.scope, owner_id=self.owner_id)

    def cut(
        self,
        rows: list[T],
        limit: int,
        sort_key: Callable[[T], dt.datetime | None] = lambda row: row.created_at,
    ) -> tuple[list[T], str | None]:
        """`rows` were fetched with limit + 1: the page, and the next cursor if there is more."""
        if len(rows) <= limit:
            return rows, None
        page = rows[:limit]
        last = Position(sort_key(page[-1]), page[-1].id)
        return page, encode_cursor(
            last, secret=self.secret, scope=self.scope, owner_id=self.owner_id
        )
