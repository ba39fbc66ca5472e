"""Upload problems with their stable codes (docs/uploads-design.md); the image refusals
(corrupt, too large, unsupported) are imaging's, as on `POST /v1/images`."""

from __future__ import annotations

from media_api.errors import MediaError
from media_api.uploads import tus


class SizeMismatch(MediaError):
    """The stored object is not the declared length (a store that ignored the signed size)."""

    status_code = 422
    code = "size-mismatch"
    title = "Size mismatch"


class Sha256Mismatch(MediaError):
    """The stored bytes do not hash to the sha256 the client declared. Not tus's per-request
    `checksum-mismatch` (460): this one is about the whole file, and final."""

    status_code = 422
    code = "sha256-mismatch"
    title = "SHA-256 mismatch"


class InvalidTusRequest(MediaError):
    status_code = 400
    code = tus.InvalidTusRequest.code
    title = "Invalid tus request"


class UnsupportedChecksum(MediaError):
    status_code = 400
    code = tus.UnsupportedChecksum.code
    title = "Unsupported checksum"


def tus_problem(exc: tus.TusError) -> MediaError:
    """The problem a pure tus header refusal is answered with."""
    problem = UnsupportedChecksum if isinstance(exc, tus.UnsupportedChecksum) else InvalidTusRequest
    return problem(exc.detail)


class OffsetMismatch(MediaError):
    """`Upload-Offset` is not the offset stored: HEAD, then continue from there."""

    status_code = 409
    code = "offset-mismatch"
    title = "Offset mismatch"


class UploadGone(MediaError):
    """The upload ended (expired, rejected, terminated) and takes no more bytes."""

    status_code = 410
    code = "upload-gone"
    title = "Upload gone"


class TusVersionUnsupported(MediaError):
    """No `Tus-Resumable: 1.0.0`: the only version spoken here (`Tus-Version` says so)."""

    status_code = 412
    code = "tus-version"
    title = "Unsupported tus version"
    response_headers = {
        "Tus-Version": {"description": "The versions supported.", "schema": {"type": "string"}}
    }

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers["Tus-Version"] = tus.TUS_VERSION


class UploadLocked(MediaError):
    """Another request holds the upload and did not let go in time; retry."""

    status_code = 423
    code = "upload-locked"
    title = "Upload locked"


class ChecksumMismatch(MediaError):
    """The request's body does not have its `Upload-Checksum`: it was discarded."""

    status_code = 460
    code = "checksum-mismatch"
    title = "Checksum mismatch"


class InvalidParts(MediaError):
    """`complete` named parts that are not exactly the ones uploaded (1..n, their ETags)."""

    status_code = 422
    code = "invalid-parts"
    title = "Invalid parts"


class UploadIncomplete(MediaError):
    """`complete` before every byte was uploaded (no object, or a part missing)."""

    status_code = 409
    code = "upload-incomplete"
    title = "Upload incomplete"
