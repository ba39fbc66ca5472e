"""tus 1.0.0 at /v1/uploads/tus: discovery, creation (with upload), HEAD, PATCH and
termination, plus the protocol middleware (docs/uploads-design.md, section 1)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from media_api.api.deps import (
    CurrentOwner,
    SessionDep,
    StateDep,
    UnitOfWorkDep,
    api_rate_limit,
    upload_rate_limit,
)
from media_api.api.uploads import finalize
from media_api.cleanup import run_to_the_end
from media_api.errors import (
    MediaError,
    NotFound,
    ServerBusy,
    ValidationFailed,
    problem,
    problem_document,
    problem_responses,
)
from media_api.images.errors import (
    FileTooLarge,
    IncompleteUpload,
    QuotaExceeded,
    StorageUnavailable,
)
from media_api.imaging.probe import (
    CorruptImage,
    EmptyFile,
    ImageTooLarge,
    ProbeError,
    UnsupportedMediaType,
)
from media_api.metrics import counted
from media_api.resources import AppState
from media_api.unit_of_work import UnitOfWork
from media_api.uploads import repository, service, tus
from media_api.uploads.errors import (
    ChecksumMismatch,
    InvalidTusRequest,
    OffsetMismatch,
    SizeMismatch,
    TusVersionUnsupported,
    UnsupportedChecksum,
    UploadGone,
    UploadLocked,
    tus_problem,
)
from media_api.uploads.lease import Hold, holding
from media_api.uploads.models import Upload, UploadKind, UploadState
from media_api.uploads.receiver import Receiver, chunks, seal

PREFIX = "/v1/uploads/tus"
IMAGE_ID_HEADER = "Media-Image-Id"
"""Ours: the image an upload became (or the owner's image with the same bytes)."""

router = APIRouter(prefix=PREFIX, tags=["uploads"])

# The headers a browser may read from tus answers (CORS), and may send.
EXPOSED_HEADERS = [
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    IMAGE_ID_HEADER,
]
REQUEST_HEADERS = [
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Checksum",
    "Upload-Defer-Length",
    "X-HTTP-Method-Override",
]


TUS_RESPONSE_HEADERS = [
    (b"tus-resumable", tus.TUS_VERSION.encode()),
    (b"cache-control", b"no-store"),
]
_OURS = {name for name, _ in TUS_RESPONSE_HEADERS}
_VERSION = tus.TUS_VERSION.encode()


class TusProtocol:
    """Pure ASGI, on the tus prefix only: `X-HTTP-Method-Override` (POST as PATCH or
    DELETE), 412 without `Tus-Resumable: 1.0.0` (but for OPTIONS), and `Tus-Resumable` and
    `Cache-Control: no-store` on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        override = headers.get(b"x-http-method-override", b"").decode("latin-1").upper()
        if scope["method"] == "POST" and override in {"PATCH", "DELETE"}:
            scope = {**scope, "method": override}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                message["headers"] = [*kept, *TUS_RESPONSE_HEADERS]
            await send(message)

        refusal: MediaError | None = None
        if scope["path"].rstrip("/") == PREFIX and scope["method"] not in {"OPTIONS", "POST"}:
            # Not the upload status route with `tus` for an id: this path is tus's.
            answer = problem(405, "method-not-allowed", "Method not allowed", "use OPTIONS or POST")
            answer.headers["Allow"] = "OPTIONS, POST"
        elif scope["method"] != "OPTIONS" and headers.get(b"tus-resumable") != _VERSION:
            refusal = TusVersionUnsupported("send Tus-Resumable: 1.0.0, the version spoken here")
            answer = problem(refusal.status_code, refusal.code, refusal.title, refusal.detail)
            answer.headers.update(refusal.headers)
        else:
            await self.app(scope, receive, send_with_headers)
            return
        await answer(scope, receive, send_with_headers)


def _header(
    name: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    }


_DIGITS = {"type": "string", "pattern": "^[0-9]{1,18}$"}
TUS_RESUMABLE = _header(
    "Tus-Resumable", "The protocol version.", {"type": "string", "enum": ["1.0.0"]}, True
)
_OFFSET_HEADERS = {
    "Upload-Offset": {"description": "Bytes stored so far.", "schema": {"type": "integer"}},
    "Upload-Expires": {
        "description": "When the upload expires unless continued (RFC 9110 date).",
        "schema": {"type": "string"},
    },
}
_IMAGE_HEADER = {
    IMAGE_ID_HEADER: {
        "description": "The image the upload became, once complete and accepted.",
        "schema": {"type": "string", "format": "uuid"},
    }
}
_OFFSET_BODY = {
    "required": False,
    "content": {tus.OFFSET_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
}
_REFUSALS = (
    UnsupportedMediaType,
    CorruptImage,
    ImageTooLarge,
    SizeMismatch,
    ServerBusy,
    StorageUnavailable,
)


@router.options(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        204: {
            "description": "What this server speaks.",
            "headers": {
                name: {"schema": {"type": "string"}}
                for name in (
                    "Tus-Version",
                    "Tus-Extension",
                    "Tus-Max-Size",
                    "Tus-Checksum-Algorithm",
                )
            },
        }
    },
)
async def discover(state: StateDep) -> Response:
    """tus discovery: version, extensions, the largest upload and the checksum algorithms.
    Public, as a browser's preflight cannot carry a key."""
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers={
            "Tus-Version": tus.TUS_VERSION,
            "Tus-Extension": tus.TUS_EXTENSION,
            "Tus-Max-Size": str(state.settings.max_upload_bytes),
            "Tus-Checksum-Algorithm": tus.TUS_CHECKSUM_ALGORITHM,
        },
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_class=Response,
    dependencies=[Depends(api_rate_limit), Depends(upload_rate_limit)],
    openapi_extra={
        "parameters": [
            TUS_RESUMABLE,
            _header("Upload-Length", "The size of the file in bytes.", _DIGITS, True),
            _header(
                "Upload-Metadata",
                "`filename`, `title`, `gallery_id`: `key base64(value)`, comma separated.",
                {"type": "string", "maxLength": tus.MAX_METADATA_BYTES},
            ),
            _header(
                "Upload-Checksum",
                "`sha1|sha256 base64(digest)` of the body, if one is sent.",
                {"type": "string"},
            ),
        ],
        "requestBody": _OFFSET_BODY,
    },
    responses={
        201: {
            "description": (
                "Created; `Location` is the upload's URL. With a body (Creation With Upload), "
                "`Upload-Offset` says how much of it was stored."
            ),
            "headers": {
                "Location": {"description": "The upload's URL.", "schema": {"type": "string"}},
                **_OFFSET_HEADERS,
                **_IMAGE_HEADER,
            },
        },
        **problem_responses(
            InvalidTusRequest,
            UnsupportedChecksum,
            EmptyFile,
            NotFound,
            TusVersionUnsupported,
            FileTooLarge,
            QuotaExceeded,
            ValidationFailed,
            ChecksumMismatch,
            UploadLocked,
            *_REFUSALS,
        ),
    },
)
async def create_upload(
    request: Request, owner: CurrentOwner, session: SessionDep, state: StateDep, uow: UnitOfWorkDep
) -> Response:
    """Creation: a new upload of `Upload-Length` bytes, its quota reserved; a body of type
    `application/offset+octet-stream` is its first bytes (Creation With Upload)."""
    headers = request.headers
    try:
        tus.refuse_defer_length(headers.get("upload-defer-length"))
        length = tus.parse_upload_length(headers.get("upload-length"))
        raw_metadata = headers.get("upload-metadata")
        metadata = tus.parse_metadata(raw_metadata or "")
        checksum = _checksum(headers.get("upload-checksum"))
    except tus.TusError as exc:
        raise tus_problem(exc) from None
    with_body = _has_body(request)
    if with_body:
        _offset_content_type(request)
    upload = await service.create(
        session,
        state.settings,
        owner,
        UploadKind.TUS,
        length,
        filename=metadata.get("filename"),
        title=metadata.get("title") or None,
        gallery_id=metadata.get("gallery_id") or None,
        metadata=raw_metadata or None,
    )
    await session.commit()
    answer = Response(status_code=status.HTTP_201_CREATED)
    answer.headers["Location"] = str(request.url_for("tus_upload", upload_id=upload.id))
    if with_body:
        upload_id = upload.id
        try:
            async with _held(state, session, owner, upload_id) as (upload, hold):
                assert hold is not None
                upload = await _receive(request, state, session, uow, upload, hold, checksum)
        except BaseException:
            # The client never learns the upload's URL from a refusal: nothing of it may stay.
            await run_to_the_end(_abandon(state, owner, upload_id))
            raise
        answer.headers["Upload-Offset"] = str(upload.received)
    _describe(answer, upload)
    return answer


@router.head(
    "/{upload_id}",
    name="tus_upload",
    response_class=Response,
    dependencies=[Depends(api_rate_limit)],
    openapi_extra={"parameters": [TUS_RESUMABLE]},
    responses={
        200: {
            "description": "The stored offset (no body).",
            "headers": {
                **_OFFSET_HEADERS,
                "Upload-Length": {
                    "description": "The declared size.",
                    "schema": {"type": "integer"},
                },
                "Upload-Metadata": {
                    "description": "As sent at creation.",
                    "schema": {"type": "string"},
                },
                **_IMAGE_HEADER,
            },
        },
        **problem_responses(NotFound, UploadGone, TusVersionUnsupported, *_REFUSALS),
    },
)
async def upload_offset(
    upload_id: uuid.UUID,
    owner: CurrentOwner,
    session: SessionDep,
    state: StateDep,
    uow: UnitOfWorkDep,
) -> Response:
    """Where to continue: the committed offset. A request still writing the upload is asked
    to let go first, so the answer does not move under the client."""
    await session.commit()
    async with holding(
        state.sessions,
        session,
        state.settings,
        owner,
        upload_id,
        UploadKind.TUS,
        wait_or_lock=False,
    ) as (upload, hold):
        if hold is not None:
            upload = await _finish_if_complete(state, session, uow, upload, hold)
    _refuse_ended(upload)
    answer = Response(status_code=status.HTTP_200_OK)
    answer.headers["Upload-Offset"] = str(upload.received)
    answer.headers["Upload-Length"] = str(upload.length)
    if upload.upload_metadata:
        answer.headers["Upload-Metadata"] = upload.upload_metadata
    _describe(answer, upload)
    return answer


@router.patch(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(api_rate_limit)],
    openapi_extra={
        "parameters": [
            TUS_RESUMABLE,
            _header(
                "Upload-Offset", "Where this body goes: the offset HEAD answered.", _DIGITS, True
            ),
            _header(
                "Upload-Checksum", "`sha1|sha256 base64(digest)` of this body.", {"type": "string"}
            ),
        ],
        "requestBody": {**_OFFSET_BODY, "required": True},
    },
    responses={
        204: {"description": "Stored.", "headers": {**_OFFSET_HEADERS, **_IMAGE_HEADER}},
        **problem_responses(
            InvalidTusRequest,
            UnsupportedChecksum,
            NotFound,
            OffsetMismatch,
            UploadGone,
            TusVersionUnsupported,
            FileTooLarge,
            UploadLocked,
            ChecksumMismatch,
            IncompleteUpload,
            *_REFUSALS,
        ),
    },
)
async def upload_bytes(
    upload_id: uuid.UUID,
    request: Request,
    owner: CurrentOwner,
    session: SessionDep,
    state: StateDep,
    uow: UnitOfWorkDep,
) -> Response:
    """Append the body at `Upload-Offset`. The first bytes of the file are sniffed (415 ends
    the upload); after the last one, the file is validated as `POST /v1/images` would, and the
    answer carries `Media-Image-Id`."""
    await session.commit()
    try:
        offset = tus.parse_upload_offset(request.headers.get("upload-offset"))
        checksum = _checksum(request.headers.get("upload-checksum"))
    except tus.TusError as exc:
        raise tus_problem(exc) from None
    _offset_content_type(request)
    declared = request.headers.get("content-length")
    async with holding(
        state.sessions, session, state.settings, owner, upload_id, UploadKind.TUS
    ) as (upload, hold):
        assert hold is not None
        _refuse_ended(upload)
        if offset != upload.received:
            raise OffsetMismatch(f"the upload is at offset {upload.received}, not {offset}")
        if declared and declared.isdigit() and offset + int(declared) > upload.length:
            raise FileTooLarge("the body goes past Upload-Length")
        if upload.received < upload.length:
            upload = await _receive(request, state, session, uow, upload, hold, checksum)
        else:
            upload = await _finish_if_complete(state, session, uow, upload, hold)
    answer = Response(status_code=status.HTTP_204_NO_CONTENT)
    answer.headers["Upload-Offset"] = str(upload.received)
    _describe(answer, upload)
    return answer


@router.delete(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(api_rate_limit)],
    openapi_extra={"parameters": [TUS_RESUMABLE]},
    responses=problem_responses(NotFound, TusVersionUnsupported, UploadLocked, StorageUnavailable),
)
async def terminate_upload(
    upload_id: uuid.UUID, owner: CurrentOwner, session: SessionDep, state: StateDep
) -> Response:
    """Termination: the upload and every byte of it are gone, its quota given back (an image
    it became stays)."""
    await session.commit()
    async with holding(
        state.sessions, session, state.settings, owner, upload_id, UploadKind.TUS
    ) as (upload, _):
        await repository.release_reservation(session, [upload.id])
        await repository.delete(session, upload.id)
        await session.commit()
    await _discard_bytes(state, upload.object_key, upload.s3_upload_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _held(
    state: AppState,
    session: AsyncSession,
    owner: uuid.UUID,
    upload_id: uuid.UUID,
    *,
    wait_or_lock: bool = True,
) -> contextlib.AbstractAsyncContextManager[tuple[Upload, Hold | None]]:
    """The caller's tus upload, leased to this request (`lease.holding`)."""
    settings, kind = state.settings, UploadKind.TUS
    return holding(
        state.sessions, session, settings, owner, upload_id, kind, wait_or_lock=wait_or_lock
    )


def _checksum(header: str | None) -> tus.Checksum | None:
    return tus.parse_checksum(header) if header is not None else None


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(length and length != "0") or "chunked" in request.headers.get(
        "transfer-encoding", ""
    )


def _offset_content_type(request: Request) -> None:
    if (
        request.headers.get("content-type", "").split(";")[0].strip().lower()
        != tus.OFFSET_CONTENT_TYPE
    ):
        raise UnsupportedMediaType(f"a tus body must be sent as {tus.OFFSET_CONTENT_TYPE}")


def _refuse_ended(upload: Upload) -> None:
    if upload.state in (UploadState.REJECTED, UploadState.EXPIRED):
        raise UploadGone(f"the upload is {upload.state}; it takes no more bytes")


def _describe(answer: Response, upload: Upload) -> None:
    answer.headers["Upload-Expires"] = tus.http_date(upload.expires_at)
    if upload.image_id is not None:
        answer.headers[IMAGE_ID_HEADER] = str(upload.image_id)


async def _receive(
    request: Request,
    state: AppState,
    session: AsyncSession,
    uow: UnitOfWork,
    upload: Upload,
    hold: Hold,
    checksum: tus.Checksum | None,
) -> Upload:
    """Store the body at the upload's offset, then finish the upload if that was its end."""
    receiver = Receiver(session, state.store, state.settings, upload, hold, checksum)
    ids = _Stored(upload.id, upload.object_key, lambda: receiver.upload.s3_upload_id)
    body = counted(request.stream(), state.metrics.upload_received_bytes)
    try:
        try:
            async for chunk in chunks(body, hold.let_go, state.settings.tus_read_timeout_seconds):
                await receiver.write(chunk)
        except ClientDisconnect:
            if checksum is not None:  # a cut body cannot match its checksum
                raise IncompleteUpload("the body was cut short; nothing of it was kept") from None
        # Stored as far as it came, even when the request is being cancelled.
        await run_to_the_end(_finish(receiver))
    except UnsupportedMediaType as exc:
        await _reject(state, session, uow, ids, exc)
        raise
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("the upload could not be stored; try again") from exc
    return await _finish_if_complete(state, session, uow, receiver.upload, hold)


async def _finish(receiver: Receiver) -> None:
    await receiver.finish()


async def _finish_if_complete(
    state: AppState, session: AsyncSession, uow: UnitOfWork, upload: Upload, hold: Hold
) -> Upload:
    """Every byte stored and the upload not yet an image: assemble it, validate it and record
    the image (committed before the lease is let go). A refusal ends the upload."""
    if upload.received < upload.length or upload.state not in (
        UploadState.RECEIVING,
        UploadState.VALIDATING,
    ):
        return upload
    try:
        await seal(session, state.store, upload, hold)
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("the upload could not be assembled; try again") from exc
    await finalize(state, session, uow, upload)
    await session.commit()
    await uow.committed()
    return upload


async def _abandon(state: AppState, owner: uuid.UUID, upload_id: uuid.UUID) -> None:
    """Remove an upload still receiving (a Creation With Upload whose body failed), its
    reservation given back; one that ended (rejected) stays, as the record of why."""
    async with state.sessions() as session:
        upload = await repository.get(session, owner, upload_id)
        if upload is None or upload.state != UploadState.RECEIVING:
            return
        await repository.release_reservation(session, [upload_id])
        await repository.delete(session, upload_id)
        await session.commit()
    await _discard_bytes(state, upload.object_key, upload.s3_upload_id)


class _Stored(NamedTuple):
    """Where an upload's bytes are, read before a rollback could expire the row object."""

    upload_id: uuid.UUID
    object_key: str
    s3_upload_id: Callable[[], str | None]


async def _reject(
    state: AppState,
    session: AsyncSession,
    uow: UnitOfWork,
    stored: _Stored,
    exc: MediaError | ProbeError,
) -> None:
    """End the upload refused, committed before the answer; its bytes go after."""
    s3_upload_id = stored.s3_upload_id()
    await session.rollback()
    document = problem_document(exc)
    assert document is not None
    await service.reject(session, uow, stored.upload_id, document)
    await session.commit()
    await uow.committed()  # the rejection's webhook deliveries (nothing else is queued yet)
    await run_to_the_end(_discard_bytes(state, stored.object_key, s3_upload_id))


async def _discard_bytes(state: AppState, object_key: str, s3_upload_id: str | None) -> None:
    """Abort the upload's multipart upload and delete its object (both idempotent)."""
    try:
        if s3_upload_id is not None:
            await state.store.abort_multipart(object_key, s3_upload_id)
        await state.store.delete(object_key)
    except (BotoCoreError, ClientError):
        # The expiry sweep removes them later: the row is ended, its reservation back.
        pass
