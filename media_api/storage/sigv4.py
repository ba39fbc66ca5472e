"""AWS Signature Version 4 query presigning, with the signing key cached per day.

botocore's presigner spends about 195 µs per URL here (request objects, endpoint resolution,
a fresh key derivation each time); a listing page signs up to 4 URLs per image. This does the
same computation (the canonical request of the SigV4 spec, UNSIGNED-PAYLOAD) in a few µs, and
can sign headers besides host: `content-length` binds an upload URL to one exact body size.
Checked against AWS's published example, botocore, and SeaweedFS in the tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from functools import lru_cache
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
PAYLOAD = "UNSIGNED-PAYLOAD"  # the body is not hashed: clients stream it


def _uri_encode(value: str, safe: str = "") -> str:
    """RFC 3986 encoding as SigV4 wants it: only A-Z a-z 0-9 - _ . ~ stay as they are."""
    return quote(value, safe="-_.~" + safe)


@lru_cache(maxsize=16)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def presign(
    *,
    method: str,
    endpoint: str,
    path: str,
    access_key: str,
    secret_key: str,
    region: str,
    expires_seconds: int,
    now: dt.datetime,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    service: str = "s3",
) -> str:
    """A presigned URL for `method` on `path` (the full object path, e.g. /bucket/key).

    `headers` (besides host) are signed: the request must send each with exactly this value,
    e.g. {"content-length": "1234"}. `params` (e.g. partNumber, uploadId) are signed too.
    """
    parts = urlsplit(endpoint)
    host = parts.netloc
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    signed = {name.lower(): " ".join(value.split()) for name, value in (headers or {}).items()}
    signed["host"] = host
    signed_names = ";".join(sorted(signed))
    query = {
        **(params or {}),
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_seconds),
        "X-Amz-SignedHeaders": signed_names,
    }
    canonical_query = "&".join(
        f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(query.items())
    )
    canonical_uri = _uri_encode(parts.path.rstrip("/") + path, safe="/")
    # Each header line ends with a newline, so the block is followed by an empty line.
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in sorted(signed))
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, signed_names, PAYLOAD]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _signing_key(secret_key, date, region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{host}{canonical_uri}?{canonical_query}&X-Amz-Signature={signature}"
