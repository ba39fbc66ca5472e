"""AWS Signature Version 4 query presigning for GET, with the signing key cached per day.

botocore's presigner spends about 195 µs per URL here (request objects, endpoint resolution,
a fresh key derivation each time); a listing page signs up to 4 URLs per image. This does the
same computation (the canonical request of the SigV4 spec, host as the only signed header,
UNSIGNED-PAYLOAD) in a few µs. Checked against AWS's published example and by SeaweedFS,
which verifies every signature in the tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from functools import lru_cache
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _uri_encode(value: str, safe: str = "") -> str:
    """RFC 3986 encoding as SigV4 wants it: only A-Z a-z 0-9 - _ . ~ stay as they are."""
    return quote(value, safe="-_.~" + safe)


@lru_cache(maxsize=16)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def presign_get(
    *,
    endpoint: str,
    path: str,
    access_key: str,
    secret_key: str,
    region: str,
    expires_seconds: int,
    now: dt.datetime,
    params: dict[str, str] | None = None,
    service: str = "s3",
) -> str:
    """A presigned GET URL for `path` (already the full object path, e.g. /bucket/key)."""
    parts = urlsplit(endpoint)
    host = parts.netloc
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    query = {
        **(params or {}),
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_seconds),
        "X-Amz-SignedHeaders": "host",
    }
    canonical_query = "&".join(
        f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(query.items())
    )
    canonical_uri = _uri_encode(parts.path.rstrip("/") + path, safe="/")
    canonical_request = "\n".join(
        ["GET", canonical_uri, canonical_query, f"host:{host}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _signing_key(secret_key, date, region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{host}{canonical_uri}?{canonical_query}&X-Amz-Signature={signature}"
