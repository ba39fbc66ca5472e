"""Uploads as clients make them (tus requests, direct uploads through presigned URLs) and the
rows they leave, for the upload tests."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from media_api.resources import AppState
from media_api.uploads import tus
from media_api.uploads.models import Upload
from tests.support.callers import Caller

ENDPOINT = "/v1/uploads/tus"
OCTETS = {"Content-Type": tus.OFFSET_CONTENT_TYPE}


@dataclass
class Tus:
    """One caller speaking tus 1.0.0 to the API (a TestClient or a real socket)."""

    http: TestClient | httpx.Client
    caller: Caller

    @property
    def headers(self) -> dict[str, str]:
        return {**self.caller.headers, "Tus-Resumable": tus.TUS_VERSION}

    def create(self, length: int, body: bytes | None = None, **metadata: str) -> httpx.Response:
        headers = {**self.headers, "Upload-Length": str(length)}
        if metadata:
            headers["Upload-Metadata"] = tus.format_metadata(dict(metadata))
        if body is not None:
            headers.update(OCTETS)
        return self.http.post(ENDPOINT, headers=headers, content=body)

    def created(self, length: int, **metadata: str) -> str:
        """A new upload's URL (path only, whatever host answered)."""
        resp = self.create(length, **metadata)
        assert resp.status_code == 201, resp.text
        return httpx.URL(resp.headers["Location"]).path

    def patch(
        self, url: str, offset: int, data: bytes, *, checksum: str | None = None
    ) -> httpx.Response:
        headers = {**self.headers, **OCTETS, "Upload-Offset": str(offset)}
        if checksum is not None:
            algorithm, digest = checksum, hashlib.new(checksum, data).digest()
            headers["Upload-Checksum"] = f"{algorithm} {base64.b64encode(digest).decode()}"
        return self.http.patch(url, headers=headers, content=data)

    def head(self, url: str) -> httpx.Response:
        return self.http.head(url, headers=self.headers)

    def send(self, data: bytes, chunk: int, **metadata: str) -> httpx.Response:
        """Create an upload and PATCH `data` in `chunk`-sized pieces; the last answer."""
        url = self.created(len(data), **metadata)
        resp = httpx.Response(500)
        for offset in range(0, len(data), chunk):
            resp = self.patch(url, offset, data[offset : offset + chunk])
            assert resp.status_code == 204, resp.text
        return resp


def upload_id(url: str) -> uuid.UUID:
    return uuid.UUID(url.rstrip("/").rsplit("/", 1)[1])


def upload_row(client: TestClient, url: str) -> Upload | None:
    """The upload's row as stored now (None once deleted)."""

    async def query() -> Upload | None:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            return await session.scalar(select(Upload).where(Upload.id == upload_id(url)))

    assert client.portal is not None
    return client.portal.call(query)


def create(client: TestClient, caller: Caller, data: bytes, **body: Any) -> dict[str, Any]:
    """POST /v1/uploads for `data` (201 expected); the offer."""
    resp = client.post(
        "/v1/uploads",
        headers=caller.headers,
        json={"filename": "cat.png", "size": len(data), **body},
    )
    assert resp.status_code == 201, resp.text
    offer: dict[str, Any] = resp.json()
    assert resp.headers["Location"] == f"http://testserver/v1/uploads/{offer['id']}"
    return offer


def put_parts(offer: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """PUT each part of a multipart offer to its URL; the `parts` for `complete`."""
    size = offer["part_size"]
    parts = []
    for part in offer["parts"]:
        start = (part["number"] - 1) * size
        resp = httpx.put(part["url"], content=data[start : start + size], timeout=30)
        assert resp.status_code == 200, resp.text
        parts.append({"number": part["number"], "etag": resp.headers["ETag"]})
    return parts


def complete(
    client: TestClient, caller: Caller, upload_id: str, parts: list[dict[str, Any]] | None = None
) -> httpx.Response:
    body = {"parts": parts} if parts is not None else None
    resp: httpx.Response = client.post(
        f"/v1/uploads/{upload_id}/complete", headers=caller.headers, json=body
    )
    return resp


def status_of(client: TestClient, caller: Caller, upload_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/uploads/{upload_id}", headers=caller.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body
