"""API callers: an owner with a key, uploads through the API, and views of its answers."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient

from media_api.accounts.service import create_owner_with_key
from media_api.resources import AppState


@dataclass(frozen=True)
class Caller:
    """An owner and the headers that authenticate as it."""

    owner_id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_caller(client: TestClient) -> Caller:
    """A fresh owner with an API key, created through the app's own service and database. Its
    email is one sign-up accepts too (`.test` is a special-use domain it refuses), so a client
    that sends it back, as schemathesis's stateful phase does, gets a real answer."""

    async def create() -> Caller:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            owner_id, token = await create_owner_with_key(session, f"{uuid.uuid4()}@example.com")
            await session.commit()
        return Caller(owner_id, token)

    assert client.portal is not None
    return client.portal.call(create)


def upload(
    client: TestClient,
    caller: Caller,
    data: bytes,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    **fields: str,
) -> tuple[int, dict[str, object]]:
    """POST one file; returns the status and the JSON body."""
    resp = client.post(
        "/v1/images",
        headers=caller.headers,
        files={"file": (filename, data, content_type)},
        data=fields,
    )
    return resp.status_code, resp.json()


def post_image(
    base_url: str, caller: Caller, data: bytes, filename: str = "f.png"
) -> httpx.Response:
    """POST one PNG to a server on a real socket over a connection of its own (httpx.post opens
    one per call), so that with several server processes any of them may accept it."""
    return httpx.post(
        f"{base_url}/v1/images",
        headers=caller.headers,
        files={"file": (filename, data, "image/png")},
        timeout=30,
    )


def post_at_once(
    base_url: str, caller: Caller, files: list[bytes], filename: str = "p.png"
) -> list[httpx.Response]:
    """POST every file concurrently to a server on a real socket; the responses in order."""

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/v1/images", headers=caller.headers, files={"file": (filename, data)}
                    )
                    for data in files
                )
            )

    return asyncio.run(run())


def without_urls(body: dict[str, object]) -> dict[str, object]:
    """An image resource minus its signed URLs, which are fresh on every response."""
    stable = {k: v for k, v in body.items() if k not in ("original", "download")}
    variants = body.get("variants")
    if isinstance(variants, list):
        stable["variants"] = [
            {k: v for k, v in item.items() if k not in ("url", "expires_at")} for item in variants
        ]
    return stable


def job_states(body: dict[str, object]) -> dict[str, str]:
    """{kind: state} of an image resource's jobs."""
    jobs = body["jobs"]
    assert isinstance(jobs, list)
    return {str(job["kind"]): str(job["state"]) for job in jobs}


def walk(client: TestClient, caller: Caller, path: str, **params: Any) -> list[str]:
    """The ids of every item of a paginated listing, following `next_cursor` to the end."""
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        resp = client.get(path, headers=caller.headers, params=query)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")
