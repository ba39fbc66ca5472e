"""Signed, expiring URLs for originals and variants: what clients fetch bytes with.

Presigning is local computation (an HMAC), never a request to S3, so a page of 100 images
costs no network round trip. URLs are signed for the public endpoint and tell S3 to answer
with the sniffed content type and an inline disposition with a safe file name.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from media_api.imaging.formats import extension
from media_api.storage.s3 import AsyncS3Store, SignedUrl

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(filename: str | None) -> str:
    """An ASCII file name stem no header parser can misread (no quotes, no paths)."""
    stem = (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    stem = _UNSAFE.sub("-", stem).strip("-.")[:80]
    return stem or "image"


@dataclass(frozen=True)
class Signer:
    """Signs GETs for one request (one TTL, one clock reading per URL)."""

    store: AsyncS3Store
    ttl: dt.timedelta
    on_sign: Callable[[], None] = lambda: None  # counts URLs issued (metrics)

    def sign(
        self, key: str, content_type: str, filename: str, *, attachment: bool = False
    ) -> SignedUrl:
        """A URL that serves `key` as `filename` with the given type: inline (to show it), or
        as an attachment (a download link: browsers ignore `download` on other origins)."""
        self.on_sign()
        how = "attachment" if attachment else "inline"
        return self.store.presign_get(
            key,
            self.ttl,
            content_type=content_type,
            disposition=f'{how}; filename="{filename}"',
        )

    def original(
        self, key: str, content_type: str, filename: str | None, *, attachment: bool = False
    ) -> SignedUrl:
        ext = extension(content_type)
        return self.sign(key, content_type, f"{safe_stem(filename)}.{ext}", attachment=attachment)

    def variant(self, key: str, content_type: str, filename: str | None, name: str) -> SignedUrl:
        ext = extension(content_type)
        return self.sign(key, content_type, f"{safe_stem(filename)}-{name}.{ext}")
