"""What an upload leaves behind: every object has a row, every row an object, no temp file, no
upload's bytes in quarantine and no quota still reserved."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from media_api.accounts.models import Owner
from media_api.images.models import Image
from media_api.resources import AppState
from media_api.storage.keys import originals_prefix, quarantine_prefix
from media_api.storage.s3 import S3Store


def original_keys_in_db(client: TestClient, owner_id: uuid.UUID) -> set[str]:
    """Every original key the owner's rows point at."""

    async def query() -> set[str]:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            rows = await session.execute(
                select(Image.original_key).where(Image.owner_id == owner_id)
            )
            return set(rows.scalars())

    assert client.portal is not None
    return client.portal.call(query)


def bytes_reserved(client: TestClient, owner_id: uuid.UUID) -> int:
    """What the owner's uploads in progress hold of its quota."""

    async def query() -> int:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            held = await session.scalar(select(Owner.bytes_reserved).where(Owner.id == owner_id))
            return int(held or 0)

    assert client.portal is not None
    return client.portal.call(query)


def assert_nothing_left(
    client: TestClient, store: S3Store, owner_id: uuid.UUID, upload_tmp: Path
) -> None:
    """No object without a row, no row without an object, no spooled temp file, nothing in
    quarantine (an upload's bytes), no open multipart upload, no quota reserved."""
    in_db = original_keys_in_db(client, owner_id)
    in_s3 = set(store.list_keys(originals_prefix(owner_id)))
    assert in_s3 == in_db
    assert list(upload_tmp.iterdir()) == []
    # The owner's own: other tests leave live uploads of their owners open on purpose.
    assert store.list_multipart_uploads(originals_prefix(owner_id)) == []
    assert store.list_multipart_uploads(quarantine_prefix(owner_id)) == []
    assert store.list_keys(quarantine_prefix(owner_id)) == []
    assert bytes_reserved(client, owner_id) == 0
