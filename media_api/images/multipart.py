"""Streaming multipart ingest: the request body goes to an anonymous temp file, hashed and
size-checked on the way, without ever holding the whole file in memory. A caller-given sink gets
the same bytes as they arrive (the upload service streams them to storage meanwhile).

The temp file is created with `tempfile.TemporaryFile`, which on Linux has no name at all
(O_TMPFILE): whatever happens to the process, no temp file is left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from media_api.errors import ValidationFailed
from media_api.images.errors import FileTooLarge, IncompleteUpload, InvalidMultipart
from media_api.images.schemas import UploadFields
from media_api.text import clean_filename

FILE_FIELD = "file"
TEXT_FIELDS = frozenset(UploadFields.model_fields)  # other parts are read past and dropped
MAX_FIELD_BYTES = 4096  # small by nature
# A part's headers (Content-Disposition, perhaps Content-Type: a few hundred bytes each), as
# the parser counts them; more is 400 invalid-multipart.
MAX_HEADER_BYTES = 4096
MAX_HEADERS = 8
# Multipart framing around the file (boundaries, part headers, small fields) stays well under
# this; the whole body may exceed the file limit by at most this much.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_PARTS = 16
FLUSH_BYTES = 1024 * 1024  # batch writes so each thread hop moves a meaningful amount

# Gets the file's bytes in order, and only once `check_head` has accepted the first of them.
Sink = Callable[[bytes], Awaitable[None]]


@dataclass
class Spool:
    """The uploaded file on local disk while it is validated and stored."""

    file: IO[bytes]
    filename: str | None
    size: int = 0
    head: bytes = b""
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> bytes:
        """Digest of every byte written so far."""
        return self._hash.digest()

    def write(self, data: bytes) -> None:
        """Append and hash (blocking: runs in a thread)."""
        self.file.write(data)
        self._hash.update(data)


@dataclass
class UploadForm:
    """What the multipart body carried: the file, and small text fields."""

    spool: Spool | None
    fields: dict[str, str]


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)
    is_file: bool = False


class _Receiver:
    """Turns parser callbacks into state; `pending` holds file bytes not yet written."""

    def __init__(
        self,
        tmp_dir: Path | None,
        max_bytes: int,
        head_bytes: int,
        check_head: Callable[[bytes], None],
    ) -> None:
        self.tmp_dir = tmp_dir
        self.max_bytes = max_bytes
        self.head_bytes = head_bytes
        self.check_head = check_head
        self.fields: dict[str, str] = {}
        self.spool: Spool | None = None
        self.pending = bytearray()
        self.parts = 0
        self.part = _Part()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.done = False

    # -- parser callbacks (sync, cheap) --

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InvalidMultipart(f"more than {MAX_PARTS} parts")
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition = self.part.headers.get(b"content-disposition")
        if disposition is None:
            raise InvalidMultipart("a part has no Content-Disposition header")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if name is None:
            raise InvalidMultipart("a part has no name")
        self.part.name = name.decode("utf-8", "replace")
        # Informational only: control characters are dropped rather than refused (media_api.text).
        filename = options.get(b"filename")
        if filename:
            self.part.filename = clean_filename(filename.decode("utf-8", "replace")) or None
        if self.part.name == FILE_FIELD:
            if self.spool is not None:
                raise InvalidMultipart("only one file per request")
            self.part.is_file = True
            self.spool = Spool(
                file=tempfile.TemporaryFile(dir=self.tmp_dir, prefix="upload-"),  # noqa: SIM115
                filename=self.part.filename,
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.part.is_file:
            if self.part.name not in TEXT_FIELDS:
                return
            self.part.value += data[start:end]
            if len(self.part.value) > MAX_FIELD_BYTES:
                raise InvalidMultipart(f"field {self.part.name!r} is over {MAX_FIELD_BYTES} bytes")
            return
        spool = self.spool
        assert spool is not None
        spool.size += end - start
        if spool.size > self.max_bytes:
            raise FileTooLarge(f"the file is over the limit of {self.max_bytes} bytes")
        if len(spool.head) < self.head_bytes:
            spool.head += data[start : min(end, start + self.head_bytes - len(spool.head))]
            if len(spool.head) >= self.head_bytes:
                self.check_head(spool.head)  # rejects a non-image before the rest arrives
        self.pending += data[start:end]

    def on_part_end(self) -> None:
        if not self.part.is_file and self.part.name in TEXT_FIELDS:
            self.fields.setdefault(self.part.name, self.part.value.decode("utf-8", "replace"))
            check_fields(self.fields)  # refused as soon as it arrives, before the file
        elif self.spool is not None and len(self.spool.head) < self.head_bytes:
            self.check_head(self.spool.head)  # a file shorter than the sniff window

    def on_end(self) -> None:
        self.done = True


def check_fields(fields: dict[str, str]) -> None:
    """The text fields as the OpenAPI document describes them, or 422 naming each bad one."""
    try:
        UploadFields.model_validate(fields)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
        raise ValidationFailed(errors) from None


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary, or a 400 for anything that is not multipart/form-data."""
    if not content_type:
        raise InvalidMultipart("Content-Type must be multipart/form-data")
    try:
        mime, options = parse_options_header(content_type)
    except ValueError as exc:  # not latin-1: no header a server received can be that
        raise InvalidMultipart("Content-Type must be multipart/form-data") from exc
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise InvalidMultipart("Content-Type must be multipart/form-data with a boundary")
    return boundary


async def _flush(spool: Spool, pending: bytearray, sink: Sink | None) -> None:
    data = bytes(pending)
    pending.clear()
    await asyncio.to_thread(spool.write, data)
    if sink is not None:
        await sink(data)


@asynccontextmanager
async def receive_upload(
    body: AsyncIterator[bytes],
    content_type: str | None,
    *,
    max_bytes: int,
    tmp_dir: Path | None,
    head_bytes: int,
    check_head: Callable[[bytes], None],
    sink: Sink | None = None,
) -> AsyncIterator[UploadForm]:
    """Parse the body as it arrives; the file lives in an anonymous temp file until exit.

    `sink` sees every byte of the file, but only after `check_head` passed: pending bytes reach
    FLUSH_BYTES (far beyond the head) or the part ends (where a short file's head is checked).
    """
    receiver = _Receiver(tmp_dir, max_bytes, head_bytes, check_head)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
            "on_end",
        )
    }
    received = 0
    try:
        try:
            parser = MultipartParser(
                boundary_of(content_type),
                callbacks,  # type: ignore[arg-type]
                max_header_count=MAX_HEADERS,
                max_header_size=MAX_HEADER_BYTES,
            )
        except FormParserError as exc:  # a boundary over 256 bytes (RFC 2046 says 70)
            raise InvalidMultipart(f"invalid multipart boundary: {exc}") from exc
        async for chunk in body:
            received += len(chunk)
            if received > max_bytes + FORM_OVERHEAD_BYTES:
                raise FileTooLarge(f"the request body is over the limit of {max_bytes} bytes")
            try:
                parser.write(chunk)
            except FormParserError as exc:  # the parser's message names the defect
                raise InvalidMultipart(f"malformed multipart body: {exc}") from exc
            if receiver.spool is not None and len(receiver.pending) >= FLUSH_BYTES:
                await _flush(receiver.spool, receiver.pending, sink)
        if not receiver.done:
            raise IncompleteUpload("the multipart body ended early")
        if receiver.spool is not None:
            if receiver.pending:
                await _flush(receiver.spool, receiver.pending, sink)
            receiver.spool.file.seek(0)
        yield UploadForm(spool=receiver.spool, fields=receiver.fields)
    finally:
        if receiver.spool is not None:
            receiver.spool.file.close()
