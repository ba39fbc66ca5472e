"""The work of each job, outside Celery: read the original, render, store, record.

Every step is idempotent: object keys are deterministic, so a rerun overwrites; the job row
is claimed before and settled after, so a duplicate delivery of a finished job does nothing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import DBAPIError, OperationalError

from media_api.images.models import JobKind
from media_api.imaging import variants as imaging
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import ObjectNotFoundError
from workers import repository
from workers.context import WorkerContext

log = logging.getLogger(__name__)


class TransientJobError(Exception):
    """Worth retrying: storage or database unreachable. `code` is recorded on the job."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# Errors of the infrastructure, not of the image: retry later.
TRANSIENT = (
    BotoCoreError,
    ClientError,
    OperationalError,
    DBAPIError,
    ConnectionError,
    TimeoutError,
)


def presets(settings: Settings) -> list[imaging.Preset]:
    """`name:size[:crop]` strings from settings as imaging presets."""
    result = []
    for spec in settings.variant_presets:
        name, size, *mode = spec.split(":")
        result.append(imaging.Preset(name=name, size=int(size), crop=mode == ["crop"]))
    return result


def make_variants(ctx: WorkerContext, image_id: uuid.UUID) -> str:
    """Run the thumbnails job for one image; returns what happened, for the task log."""
    kind = JobKind.THUMBNAILS
    with ctx.sessions.begin() as session:
        claimed = repository.claim(session, image_id, kind)
    if claimed is None:
        return "skipped: done already or image deleted"
    try:
        original = ctx.store.get_bytes(claimed.original_key)
        result = imaging.render(original, presets(ctx.settings), ctx.settings.variant_format)
        records: list[dict[str, Any]] = []
        for variant in result.variants:
            key = keys.variant_key(claimed.owner_id, image_id, variant.name, variant.ext)
            ctx.store.put_bytes(key, variant.data, variant.content_type)
            records.append(
                {
                    "name": variant.name,
                    "key": key,
                    "width": variant.width,
                    "height": variant.height,
                    "content_type": variant.content_type,
                    "size": len(variant.data),
                }
            )
    except ObjectNotFoundError:
        return _fail(ctx, image_id, kind, "original-missing")
    except TRANSIENT as exc:
        log.warning("thumbnails for %s: transient %s", image_id, type(exc).__name__)
        _retry_later(ctx, image_id, kind, "storage-unavailable")
        raise TransientJobError("storage-unavailable") from exc
    except Exception:
        # The original passed validation, so this is a decoder/encoder fault: retrying the
        # same bytes gives the same answer.
        log.exception("thumbnails for %s: render failed", image_id)
        return _fail(ctx, image_id, kind, "render-failed")

    with ctx.sessions.begin() as session:
        recorded = repository.variants_ready(session, image_id, records, result.placeholder)
    prefix = keys.image_prefix(claimed.owner_id, image_id)
    if not recorded:
        ctx.store.delete_prefix(prefix)  # the image was deleted while we worked
        return "discarded: image deleted meanwhile"
    # Variants of an earlier run in another format or preset set are no longer referenced.
    current = {record["key"] for record in records}
    for key in ctx.store.list_keys(prefix):
        if key not in current:
            ctx.store.delete(key)
    return f"ready: {len(records)} variants"


def _fail(ctx: WorkerContext, image_id: uuid.UUID, kind: JobKind, code: str) -> str:
    with ctx.sessions.begin() as session:
        repository.job_failed(session, image_id, kind, code, fails_image=kind is JobKind.THUMBNAILS)
    return f"failed: {code}"


def _retry_later(ctx: WorkerContext, image_id: uuid.UUID, kind: JobKind, code: str) -> None:
    try:
        with ctx.sessions.begin() as session:
            repository.job_retry_later(session, image_id, kind, code)
    except TRANSIENT:
        # The database is down too: the row stays `running` and the sweep's timeout covers it.
        log.warning("could not record the retry of %s/%s", image_id, kind)
