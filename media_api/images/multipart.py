"""Streaming multipart reader: the request body as it arrives, turned into parts in order.

It holds no file and calls nothing back: text fields come out whole (they are small), the file
as `FileStart`, its bytes as they arrive, then `FileEnd`. Limits on the form (part count, header
and field sizes, the file's and the body's size) are enforced here, as early as the bytes allow.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Collection
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from media_api.images.errors import FileTooLarge, IncompleteUpload, InvalidMultipart
from media_api.text import clean_filename

FILE_FIELD = "file"
MAX_FIELD_BYTES = 4096  # small by nature
# A part's headers (Content-Disposition, perhaps Content-Type: a few hundred bytes each), as
# the parser counts them; more is 400 invalid-multipart.
MAX_HEADER_BYTES = 4096
MAX_HEADERS = 8
# Multipart framing around the file (boundaries, part headers, small fields) stays well under
# this; the whole body may exceed the file limit by at most this much.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_PARTS = 16


@dataclass(frozen=True)
class Field:
    """A text field, whole."""

    name: str
    value: str


@dataclass(frozen=True)
class FileStart:
    """The file part begins; its bytes follow as `bytes` parts, then `FileEnd`."""

    filename: str | None


@dataclass(frozen=True)
class FileEnd:
    """The file part is over (the body may still carry fields)."""


Part = Field | FileStart | bytes | FileEnd


@dataclass
class _Current:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str | None = None
    value: bytearray = field(default_factory=bytearray)
    is_file: bool = False


class _Receiver:
    """Turns the parser's callbacks into parts, queued in order until the reader yields them."""

    def __init__(self, max_file_bytes: int, fields: Collection[str]) -> None:
        self.max_file_bytes = max_file_bytes
        self.fields = fields
        self.parts: list[Part] = []
        self.data = bytearray()  # file bytes of the current body chunk, not yet queued
        self.file_bytes = 0
        self.count = 0
        self.has_file = False
        self.current = _Current()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.done = False

    def take(self) -> list[Part]:
        """Everything the last body chunk completed, file bytes included."""
        self.flush()
        parts, self.parts = self.parts, []
        return parts

    def flush(self) -> None:
        if self.data:
            self.parts.append(bytes(self.data))
            self.data.clear()

    # -- parser callbacks (sync, cheap) --

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise InvalidMultipart(f"more than {MAX_PARTS} parts")
        self.current = _Current()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.current.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition = self.current.headers.get(b"content-disposition")
        if disposition is None:
            raise InvalidMultipart("a part has no Content-Disposition header")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if name is None:
            raise InvalidMultipart("a part has no name")
        self.current.name = name.decode("utf-8", "replace")
        if self.current.name != FILE_FIELD:
            return
        if self.has_file:
            raise InvalidMultipart("only one file per request")
        self.has_file = self.current.is_file = True
        # Informational only: control characters are dropped rather than refused (media_api.text).
        filename = options.get(b"filename")
        cleaned = clean_filename(filename.decode("utf-8", "replace")) if filename else None
        self.parts.append(FileStart(cleaned or None))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        current = self.current
        if current.is_file:
            self.file_bytes += end - start
            if self.file_bytes > self.max_file_bytes:
                raise FileTooLarge(f"the file is over the limit of {self.max_file_bytes} bytes")
            self.data += data[start:end]
        elif current.name in self.fields:
            current.value += data[start:end]
            if len(current.value) > MAX_FIELD_BYTES:
                raise InvalidMultipart(f"field {current.name!r} is over {MAX_FIELD_BYTES} bytes")
        # other parts are read past and dropped

    def on_part_end(self) -> None:
        current = self.current
        if current.is_file:
            self.flush()
            self.parts.append(FileEnd())
        elif current.name in self.fields:
            assert current.name is not None
            self.parts.append(Field(current.name, current.value.decode("utf-8", "replace")))

    def on_end(self) -> None:
        self.done = True


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


async def read_parts(
    body: AsyncIterator[bytes],
    content_type: str | None,
    *,
    max_file_bytes: int,
    fields: Collection[str],
) -> AsyncGenerator[Part, None]:
    """The parts of a multipart/form-data body, as soon as each body chunk completes them.

    Text fields other than `fields` are dropped. Ends with `IncompleteUpload` if the body stops
    before the closing boundary.
    """
    receiver = _Receiver(max_file_bytes, fields)
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
    try:
        parser = MultipartParser(
            boundary_of(content_type),
            callbacks,  # type: ignore[arg-type]
            max_header_count=MAX_HEADERS,
            max_header_size=MAX_HEADER_BYTES,
        )
    except FormParserError as exc:  # a boundary over 256 bytes (RFC 2046 says 70)
        raise InvalidMultipart(f"invalid multipart boundary: {exc}") from exc
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > max_file_bytes + FORM_OVERHEAD_BYTES:
            raise FileTooLarge(f"the request body is over the limit of {max_file_bytes} bytes")
        try:
            parser.write(chunk)
        except FormParserError as exc:  # the parser's message names the defect
            raise InvalidMultipart(f"malformed multipart body: {exc}") from exc
        for part in receiver.take():
            yield part
    if not receiver.done:
        raise IncompleteUpload("the multipart body ended early")
