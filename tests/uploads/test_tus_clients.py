"""Real tus clients over real sockets: tuspy cut at 40 % and resumed by a second client (only
the remainder is sent), its checksums, a body cut by a dropped connection, and two API
processes sharing one upload, one of them holding it from a stalled client."""

from __future__ import annotations

import hashlib
import io
import socket
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tusclient import client as tusclient
from tusclient.uploader import Uploader

from media_api.settings import Settings
from media_api.uploads import tus
from media_api.uploads.models import Upload
from tests.support.callers import Caller
from tests.support.images import noise_png
from tests.support.serving import serve_process
from tests.support.uploads import ENDPOINT, Tus, upload_row
from tests.support.waiting import poll

CHUNK = 512 * 1024


class Counting(io.BytesIO):
    """A file that counts the bytes a client read from it to send."""

    sent = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.sent += len(data)
        return data


class Sha256Uploader(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return noise_png(1400)  # about 2 MB: four chunks


def image_of(base: str, caller: Caller, url: str) -> dict[str, object]:
    head = httpx.head(url, headers={**caller.headers, "Tus-Resumable": tus.TUS_VERSION})
    assert head.status_code == 200
    image = httpx.get(f"{base}/v1/images/{head.headers['Media-Image-Id']}", headers=caller.headers)
    assert image.status_code == 200
    body: dict[str, object] = image.json()
    return body


def test_tuspy_cut_at_40_percent_then_resumed_by_another_client(
    live_server: str, caller: Caller, photo: bytes
) -> None:
    first = Counting(photo)
    uploader = tusclient.TusClient(f"{live_server}{ENDPOINT}", headers=caller.headers).uploader(
        file_stream=first, chunk_size=CHUNK, metadata={"filename": "noise.png"}
    )
    uploader.upload(stop_at=int(len(photo) * 0.4))
    offset = uploader.offset
    assert offset == int(len(photo) * 0.4)
    assert first.sent == offset

    second = Counting(photo)
    resumed = tusclient.TusClient(f"{live_server}{ENDPOINT}", headers=caller.headers).uploader(
        file_stream=second, chunk_size=CHUNK, url=uploader.url
    )
    assert resumed.offset == offset  # asked the server, which kept every byte sent
    resumed.upload()
    assert second.sent == len(photo) - offset
    image = image_of(live_server, caller, uploader.url)
    assert (image["size"], image["filename"]) == (len(photo), "noise.png")


@pytest.mark.parametrize("uploader_class", [Uploader, Sha256Uploader])
def test_tuspy_checksums(
    live_server: str, caller: Caller, photo: bytes, uploader_class: type[Uploader]
) -> None:
    data = photo[:-1] + bytes([photo[-1] ^ 1]) if uploader_class is Uploader else photo
    tus_client = tusclient.TusClient(f"{live_server}{ENDPOINT}", headers=caller.headers)
    uploader = uploader_class(
        file_stream=io.BytesIO(data), client=tus_client, chunk_size=CHUNK, upload_checksum=True
    )
    uploader.upload(stop_at=CHUNK)
    assert uploader.offset == CHUNK
    head = httpx.head(uploader.url, headers={**caller.headers, "Tus-Resumable": tus.TUS_VERSION})
    assert head.headers["Upload-Offset"] == str(CHUNK)


def _cut_patch(base: str, caller: Caller, url: str, data: bytes, sent: int) -> socket.socket:
    """A PATCH announcing all of `data` whose connection stops after `sent` bytes of it."""
    host, port = httpx.URL(base).host, httpx.URL(base).port
    assert port is not None
    sock = socket.create_connection((host, port))
    head = (
        f"PATCH {httpx.URL(url).path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {caller.token}\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: {tus.OFFSET_CONTENT_TYPE}\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data[:sent])
    return sock


def _offset(base: str, caller: Caller, url: str) -> int:
    head = httpx.head(
        f"{base}{httpx.URL(url).path}",
        headers={**caller.headers, "Tus-Resumable": tus.TUS_VERSION},
        timeout=30,
    )
    assert head.status_code == 200, head.text
    return int(head.headers["Upload-Offset"])


def test_a_dropped_connection_keeps_what_arrived(
    live_server: str, client: TestClient, caller: Caller, photo: bytes
) -> None:
    url = Tus(httpx.Client(base_url=live_server), caller).created(len(photo))
    cut = int(len(photo) * 0.4)
    _cut_patch(live_server, caller, url, photo, cut).close()

    def stored() -> Upload | None:
        return upload_row(client, url)

    # Read from the row, not HEAD: a HEAD would take the upload over while the bytes arrive.
    row = poll(
        stored, lambda row: row is not None and row.received > 0 and not row.lease_id, "bytes"
    )
    assert row is not None
    # uvicorn drops what it had buffered but not handed over when the connection goes.
    assert 0 < row.received <= cut
    assert _offset(live_server, caller, url) == row.received
    rest = Counting(photo)
    uploader = tusclient.TusClient(f"{live_server}{ENDPOINT}", headers=caller.headers).uploader(
        file_stream=rest, chunk_size=CHUNK, url=f"{live_server}{url}"
    )
    uploader.upload()
    assert rest.sent == len(photo) - row.received
    assert image_of(live_server, caller, f"{live_server}{url}")["size"] == len(photo)


def test_two_api_processes_share_an_upload(
    settings: Settings, tmp_path: Path, client: TestClient, caller: Caller, photo: bytes
) -> None:
    env = {"MEDIA_TUS_LOCK_WAIT_SECONDS": "8", "MEDIA_UPLOAD_LEASE_SECONDS": "3"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        serve_process(settings, tmp_path / "a", **env) as a,
        serve_process(settings, tmp_path / "b", **env) as b,
    ):
        # Begun on A, 40 % of it from a client that stalls with the connection open.
        url = Tus(httpx.Client(base_url=a.url), caller).created(len(photo))
        cut = int(len(photo) * 0.4)
        stalled = _cut_patch(a.url, caller, url, photo, cut)
        try:
            time.sleep(0.5)  # the bytes reach A
            # B asks A to let go: A stores what came and releases; B answers that offset.
            offset = _offset(b.url, caller, url)
            assert 0 < offset <= cut
            row = upload_row(client, url)
            assert row is not None
            assert (row.received, row.lease_id) == (offset, None)
            rest = Counting(photo)
            uploader = tusclient.TusClient(f"{b.url}{ENDPOINT}", headers=caller.headers).uploader(
                file_stream=rest, chunk_size=CHUNK, url=f"{b.url}{httpx.URL(url).path}"
            )
            uploader.upload()
            assert rest.sent == len(photo) - offset
        finally:
            stalled.close()
        image = image_of(b.url, caller, f"{b.url}{httpx.URL(url).path}")
        assert image["size"] == len(photo)
