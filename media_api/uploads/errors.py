"""Upload problems with their stable codes (docs/uploads-design.md); the image refusals
(corrupt, too large, unsupported) are imaging's, as on `POST /v1/images`."""

from __future__ import annotations

from media_api.errors import MediaError


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
