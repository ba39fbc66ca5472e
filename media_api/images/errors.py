"""Image problems with their stable codes (see the HTTP contract in the README). The image
refusals themselves (corrupt, too large, unsupported, empty) are imaging's `ProbeError`s."""

from __future__ import annotations

from media_api.errors import RETRY_AFTER_HEADER, MediaError

# S3 refused or did not answer: nothing was recorded, and the same upload may succeed shortly.
STORAGE_RETRY_AFTER_SECONDS = 5


class InvalidMultipart(MediaError):
    status_code = 400
    code = "invalid-multipart"
    title = "Invalid multipart body"


class MissingFile(MediaError):
    status_code = 400
    code = "missing-file"
    title = "No file in the request"


class IncompleteUpload(MediaError):
    status_code = 400
    code = "incomplete-upload"
    title = "The upload was interrupted"


class FileTooLarge(MediaError):
    status_code = 413
    code = "file-too-large"
    title = "File too large"


class QuotaExceeded(MediaError):
    status_code = 413
    code = "quota-exceeded"
    title = "Storage quota exceeded"


class VariantNotReady(MediaError):
    status_code = 404
    code = "variant-not-ready"
    title = "Variant not ready"


class ProcessingInProgress(MediaError):
    status_code = 409
    code = "processing-in-progress"
    title = "Processing in progress"


class StorageUnavailable(MediaError):
    status_code = 503
    code = "storage-unavailable"
    title = "Storage unavailable"
    response_headers = {"Retry-After": RETRY_AFTER_HEADER}

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers["Retry-After"] = str(STORAGE_RETRY_AFTER_SECONDS)
