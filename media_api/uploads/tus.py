"""tus 1.0.0 protocol helpers: the advertised constants, header parsing (`Upload-Length`,
`Upload-Offset`, `Upload-Metadata`, `Upload-Checksum`) and the `Upload-Expires` date.

Pure (stdlib only), so it is unit-tested without a server. Refusals are plain exceptions with a
stable problem `code` (docs/uploads-design.md, section 1); the API layer maps them to
problem+json.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import ClassVar, Protocol

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "expiration", "checksum")
TUS_EXTENSION = ",".join(EXTENSIONS)
"""The `Tus-Extension` header value."""
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
"""The `Content-Type` of a PATCH (or a Creation With Upload POST) body."""

# Name -> digest size in bytes. sha1 is the spec's MUST (and all tuspy sends).
CHECKSUM_ALGORITHMS: dict[str, int] = {"sha1": 20, "sha256": 32}
TUS_CHECKSUM_ALGORITHM = ",".join(CHECKSUM_ALGORITHMS)
"""The `Tus-Checksum-Algorithm` header value."""

MAX_METADATA_BYTES = 4096
# 18 digits stay below 10**18, inside Postgres bigint and int64.
_DECIMAL = re.compile(r"[0-9]{1,18}")
# Printable ASCII but space (0x20) and comma (0x2C): the key is echoed verbatim on HEAD.
_METADATA_KEY = re.compile(r"[\x21-\x2B\x2D-\x7E]+")


class TusError(Exception):
    """Base of every tus header refusal: one stable `code` for the problem+json answer."""

    code: ClassVar[str]

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidTusRequest(TusError):
    """A tus header is missing or malformed (400)."""

    code = "invalid-tus-request"


class UnsupportedChecksum(TusError):
    """`Upload-Checksum` is malformed or names an algorithm we do not offer (400)."""

    code = "unsupported-checksum"


def _parse_decimal(name: str, value: str | None) -> int:
    if value is None:
        raise InvalidTusRequest(f"{name} is required")
    if not _DECIMAL.fullmatch(value):
        raise InvalidTusRequest(f"{name} must be a non-negative integer of at most 18 digits")
    return int(value)


def parse_upload_length(value: str | None) -> int:
    """`Upload-Length` (`None` when absent): ASCII digits only, no sign, no spaces."""
    return _parse_decimal("Upload-Length", value)


def parse_upload_offset(value: str | None) -> int:
    """`Upload-Offset` (`None` when absent), under the same rule as the length."""
    return _parse_decimal("Upload-Offset", value)


def refuse_defer_length(value: str | None) -> None:
    """`Upload-Defer-Length` is not supported: refuse it whatever its value."""
    if value is not None:
        raise InvalidTusRequest("Upload-Defer-Length is not supported: send Upload-Length")


def parse_metadata(header: str) -> dict[str, str | None]:
    """`Upload-Metadata`: comma-separated `key[ base64]` pairs, in the order sent.

    A key alone gives None; `key ` (an empty value, as tuspy and tus-js-client send "") gives "".
    An empty header gives no pairs.
    """
    if len(header) > MAX_METADATA_BYTES:
        raise InvalidTusRequest(f"Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes")
    pairs: dict[str, str | None] = {}
    if not header.strip():
        return pairs
    for pair in header.split(","):
        key, space, encoded = pair.lstrip().partition(" ")
        if not key:
            raise InvalidTusRequest("Upload-Metadata has an empty key")
        if not _METADATA_KEY.fullmatch(key):
            raise InvalidTusRequest(
                "Upload-Metadata keys must be printable ASCII without spaces or commas"
            )
        if key in pairs:
            raise InvalidTusRequest(f"Upload-Metadata has the key {key!r} twice")
        pairs[key] = _decode_value(key, encoded.strip()) if space else None
    return pairs


def _decode_value(key: str, encoded: str) -> str:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise InvalidTusRequest(f"Upload-Metadata value of {key!r} is not base64") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidTusRequest(f"Upload-Metadata value of {key!r} is not UTF-8") from None


def format_metadata(pairs: dict[str, str | None]) -> str:
    """The `Upload-Metadata` header for `pairs`, encoded the way tuspy and tus-js-client do."""
    return ",".join(
        key if value is None else f"{key} {base64.b64encode(value.encode()).decode('ascii')}"
        for key, value in pairs.items()
    )


class Hasher(Protocol):
    """What a checksum needs of a `hashlib` object."""

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


@dataclass(frozen=True)
class Checksum:
    """A parsed `Upload-Checksum`: the algorithm and the digest the body must have."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Hasher:
        """A fresh `hashlib` object of the algorithm, to feed the body to."""
        return hashlib.new(self.algorithm)

    def matches(self, hasher: Hasher) -> bool:
        """Whether the bytes fed to `hasher` have the claimed digest."""
        return hmac.compare_digest(hasher.digest(), self.digest)


def parse_checksum(header: str) -> Checksum:
    """`Upload-Checksum`: `<algorithm> <base64 digest>`, the algorithm one we advertise."""
    algorithm, space, encoded = header.strip().partition(" ")
    if not space:
        raise UnsupportedChecksum("Upload-Checksum must be '<algorithm> <base64 digest>'")
    size = CHECKSUM_ALGORITHMS.get(algorithm)
    if size is None:
        raise UnsupportedChecksum(
            f"Upload-Checksum algorithm must be one of {TUS_CHECKSUM_ALGORITHM}"
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise UnsupportedChecksum("Upload-Checksum digest is not base64") from None
    if len(digest) != size:
        raise UnsupportedChecksum(f"Upload-Checksum {algorithm} digest must be {size} bytes")
    return Checksum(algorithm, digest)


def http_date(moment: datetime) -> str:
    """`moment` (timezone-aware) as an RFC 9110 HTTP date, for `Upload-Expires`."""
    if moment.utcoffset() is None:
        raise ValueError("an HTTP date needs a timezone-aware datetime")
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)
