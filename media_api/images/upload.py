"""The upload session: one upload's bytes on their way in, and everything stored so far.

It drives the multipart parts itself: spools and hashes the file, refuses a non-image from its
first bytes (before any S3 request), streams the rest to S3, and overlaps the full validation
with the S3 completion. Whatever it stored is removed unless it is kept, and a kept object
still goes if the request's transaction rolls back: one clean-up, `discard`.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

from pydantic import ValidationError

from media_api.cleanup import run_to_the_end
from media_api.errors import ValidationFailed
from media_api.images.errors import MissingFile
from media_api.images.multipart import Field, FileEnd, FileStart, Part
from media_api.images.schemas import UploadFields
from media_api.imaging import probe as imaging
from media_api.storage.s3 import StoredObject
from media_api.unit_of_work import UnitOfWork

FIELDS = frozenset(UploadFields.model_fields)  # the text fields an upload may carry
FLUSH_BYTES = 1024 * 1024  # batch writes so each thread hop moves a meaningful amount


class ObjectUpload(Protocol):
    """An object written as its bytes arrive (`storage.s3.StreamingUpload`)."""

    async def write(self, data: bytes) -> None: ...
    async def complete(self) -> StoredObject: ...
    async def abort(self) -> None: ...


class ObjectStore(Protocol):
    """What an upload needs of the store (`storage.s3.AsyncS3Store`; a fake in the tests)."""

    def streaming_upload(self, key: str, content_type: str) -> ObjectUpload: ...


class FollowedValidation(Protocol):
    """A decode keeping pace with the upload (`images.validation.Following`)."""

    def progressed(self) -> None: ...
    def finished(self, size: int) -> None: ...
    async def result(self) -> imaging.ImageInfo: ...
    def close(self) -> None: ...


class Validation(Protocol):
    """The image checks (`images.validation.Validator`)."""

    async def precheck(self, spool: IO[bytes]) -> None: ...
    async def validate(self, spool: IO[bytes]) -> imaging.ImageInfo: ...
    def follow(self, spool: IO[bytes]) -> FollowedValidation | None: ...


@dataclass
class Spool:
    """The uploaded file on local disk while it is validated and stored. The temp file has no
    name at all (O_TMPFILE on Linux): whatever happens to the process, none is left behind."""

    file: IO[bytes]
    filename: str | None
    size: int = 0
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> bytes:
        """Digest of every byte written so far."""
        return self._hash.digest()

    def write(self, data: bytes) -> None:
        """Append and hash (blocking: runs in a thread). Flushed, so a decode following the
        file from another process reads every byte written."""
        self.file.write(data)
        self.file.flush()
        self._hash.update(data)
        self.size += len(data)


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


def accepted_mime_type(head: bytes, allowed: frozenset[str]) -> str:
    """The sniffed type of an allowed image, or 415 from its first bytes alone."""
    fmt, mime_type = imaging.sniff(head), imaging.sniff_mime_type(head)
    if fmt is None or mime_type is None or fmt not in allowed:
        what = "an allowed image format" if fmt is None else f"{fmt}, which is not accepted"
        raise imaging.UnsupportedMediaType(f"the content is not {what}")
    return mime_type


class UploadSession:
    """Owns the spool and the S3 object of one upload (after pict-rs's ingest session).

    Use it as `async with`: leaving the block removes what was stored unless `keep()` was the
    last thing done in it; a kept object is removed if the transaction then rolls back.
    """

    def __init__(
        self,
        store: ObjectStore,
        validator: Validation,
        key: str,
        allowed: frozenset[str],
        tmp_dir: Path | None,
    ) -> None:
        self.key = key
        self._store = store
        self._validator = validator
        self._allowed = allowed
        self._tmp_dir = tmp_dir
        self._spool: Spool | None = None
        # The decode following the spool as it fills, when a slot for it was free.
        self._followed: FollowedValidation | None = None
        self._pending = bytearray()  # file bytes not yet spooled nor sent
        # Started once the head check passed: it is typed by the sniffed format.
        self._object: ObjectUpload | None = None
        self._kept = False

    async def __aenter__(self) -> UploadSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._kept:
            # A cancelled request must still clean up, and not end before it has: shutdown
            # waits for requests in flight, then closes the store.
            await run_to_the_end(self.discard())
        elif self._spool is not None:
            self._spool.file.close()  # the object stays; the local copy is done with

    async def receive(self, parts: AsyncGenerator[Part, None]) -> dict[str, str]:
        """Read the body to its end; returns the text fields (each checked as it arrives)."""
        fields: dict[str, str] = {}
        async with aclosing(parts):
            async for part in parts:
                match part:
                    case Field(name, value):
                        fields.setdefault(name, value)
                        check_fields(fields)  # refused as soon as it arrives
                    case FileStart(filename):
                        file = tempfile.TemporaryFile(dir=self._tmp_dir, prefix="upload-")  # noqa: SIM115
                        self._spool = Spool(file, filename)
                    case bytes():
                        await self._write(part)
                    case FileEnd():
                        await self._end_file()
        return fields

    @property
    def spool(self) -> Spool:
        """The received file, or 400 when there is none or it is empty."""
        if self._spool is None:
            raise MissingFile("send the image in a multipart field named 'file'")
        if self._spool.size == 0:
            raise imaging.EmptyFile("The file is empty")
        return self._spool

    async def _write(self, data: bytes) -> None:
        self._pending += data
        if self._object is None:
            if len(self._pending) < imaging.SNIFF_BYTES:
                return
            self._start_object()  # rejects a non-image before the rest arrives
        if len(self._pending) >= FLUSH_BYTES:
            await self._flush()

    async def _end_file(self) -> None:
        if self._object is None and self._pending:
            self._start_object()  # a file shorter than the sniff window
        await self._flush()
        assert self._spool is not None
        if self._followed is not None:
            self._followed.finished(self._spool.size)
        self._spool.file.seek(0)

    def _start_object(self) -> None:
        mime_type = accepted_mime_type(bytes(self._pending[: imaging.SNIFF_BYTES]), self._allowed)
        self._object = self._store.streaming_upload(self.key, mime_type)
        assert self._spool is not None
        self._followed = self._validator.follow(self._spool.file)

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        assert self._spool is not None
        assert self._object is not None
        await asyncio.to_thread(self._spool.write, data)
        if self._followed is not None:
            self._followed.progressed()
        await self._object.write(data)

    async def complete(self) -> imaging.ImageInfo:
        """Validate the spool while the object is completed in S3 (a followed decode is
        finishing meanwhile). Both always finish; a bad image outranks a storage error, since
        retrying won't help."""
        spool, upload = self.spool, self._object
        assert upload is not None, "a non-empty file passed the head check"
        info, stored = await asyncio.gather(
            self._validated(spool), upload.complete(), return_exceptions=True
        )
        if isinstance(info, BaseException):
            raise info
        if isinstance(stored, BaseException):
            raise stored
        return info

    async def _validated(self, spool: Spool) -> imaging.ImageInfo:
        # The marker walk first: a scan bomb never reaches a decoder that is not already on it.
        await self._validator.precheck(spool.file)
        if self._followed is not None:
            return await self._followed.result()
        return await self._validator.validate(spool.file)

    def keep(self, uow: UnitOfWork) -> None:
        """The object stays when the block ends; a rollback of the transaction removes it."""
        self._kept = True
        uow.undo(self.discard)

    async def discard(self) -> None:
        """Remove everything stored so far, idempotently: the spool, and the multipart upload
        or the completed object (a failure there is logged by the store, never raised)."""
        if self._followed is not None:
            self._followed.close()  # idempotent: a finished decode has closed already
        if self._spool is not None:
            self._spool.file.close()
        upload, self._object = self._object, None
        if upload is not None:
            await upload.abort()
