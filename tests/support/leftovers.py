"""What an upload leaves behind: every object has a row, every row an object, no temp file."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from media_api.images.models import Image
from media_api.resources import AppState
from media_api.storage.keys import originals_prefix
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


def assert_nothing_left(
    client: TestClient, store: S3Store, owner_id: uuid.UUID, upload_tmp: Path
) -> None:
    """No object without a row, no row without an object, no spooled temp file."""
    in_db = original_keys_in_db(client, owner_id)
    in_s3 = set(store.list_keys(originals_prefix(owner_id)))
    assert in_s3 == in_db
    assert list(upload_tmp.iterdir()) == []
    assert store.list_multipart_uploads() == []
