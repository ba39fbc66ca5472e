"""Uploads bigger than one S3 part, sent piece by piece over a raw socket, so a test can act
while the body is still arriving (a disconnect, a deploy's SIGTERM, a racing duplicate)."""

from __future__ import annotations

import http.client
import io
import json
import os
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from media_api.storage import keys
from media_api.storage.s3 import S3Store
from tests.support.callers import Caller

MB = 1024 * 1024
PART = 5 * MB  # the part size the tests' APIs cut
# Enough of the file for two full parts to be cut: the upload session holds back less than
# FLUSH_BYTES (1 MiB).
TWO_PARTS_AND_SOME = 2 * PART + MB + 64 * 1024


def big_png() -> bytes:
    """An incompressible PNG of about 12 MiB: two full parts and a tail still to send."""
    img = Image.frombytes("RGB", (2048, 2048), os.urandom(2048 * 2048 * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=0)
    data = buf.getvalue()
    assert len(data) > TWO_PARTS_AND_SOME + 512 * 1024
    return data


class RawUpload:
    """A multipart POST of `data` as the field `file`, sent when and as fast as the test says."""

    BOUNDARY = "streaming-test-boundary"

    def __init__(
        self,
        base_url: str,
        caller: Caller,
        data: bytes,
        filename: str,
        content_type: str = "image/jpeg",
    ) -> None:
        self.data = data
        self.sent = 0
        head = (
            f"--{self.BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.BOUNDARY}--\r\n".encode()
        url = urlsplit(base_url)
        assert url.hostname is not None
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        self.conn.putrequest("POST", "/v1/images")
        headers = {
            **caller.headers,
            "Content-Type": f"multipart/form-data; boundary={self.BOUNDARY}",
            "Content-Length": str(len(head) + len(data) + len(self.tail)),
        }
        for name, value in headers.items():
            self.conn.putheader(name, value)
        self.conn.endheaders()
        self.conn.send(head)

    def send_until(self, end: int, chunk: int | None = None, pause: float = 0.0) -> None:
        """Send the file up to byte `end`: at once, or `chunk` bytes every `pause` seconds."""
        while self.sent < end:
            stop = end if chunk is None else min(end, self.sent + chunk)
            self.conn.send(self.data[self.sent : stop])
            self.sent = stop
            if pause:
                time.sleep(pause)

    def finish(self, chunk: int | None = None, pause: float = 0.0) -> tuple[int, dict[str, Any]]:
        """Send the rest and the closing boundary; the response's status and JSON body."""
        self.send_until(len(self.data), chunk, pause)
        self.conn.send(self.tail)
        resp = self.conn.getresponse()
        status, body = resp.status, json.loads(resp.read())
        self.conn.close()
        return status, body


def parts_stored(store: S3Store, owner_id: uuid.UUID) -> int:
    """Parts already stored in the owner's open multipart uploads (0: none is open)."""
    uploads = store.client.list_multipart_uploads(
        Bucket=store.bucket, Prefix=keys.originals_prefix(owner_id)
    ).get("Uploads", [])
    stored = 0
    for item in uploads:
        try:
            parts = store.client.list_parts(
                Bucket=store.bucket, Key=item["Key"], UploadId=item["UploadId"]
            )
        except store.client.exceptions.NoSuchUpload:
            continue  # completed or aborted since it was listed
        stored += len(parts.get("Parts", []))
    return stored
