"""Fixtures shared by the upload tests: a fresh owner, and the no-leftovers check after a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from media_api.storage.s3 import S3Store
from tests.support.callers import Caller, new_caller
from tests.support.leftovers import assert_nothing_left


@pytest.fixture
def caller(client: TestClient) -> Caller:
    return new_caller(client)


@pytest.fixture
def leftovers(
    client: TestClient, store: S3Store, upload_tmp: Path, caller: Caller
) -> Iterator[None]:
    """After the test: the owner's rows and objects agree and no temp file remains."""
    yield
    assert_nothing_left(client, store, caller.owner_id, upload_tmp)
