"""The work of each job, outside Celery: read the original, render, store, record.

Every step is idempotent: object keys are deterministic, so a rerun overwrites; the job row
is claimed before and settled after, so a duplicate delivery of a finished job does nothing.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError
from celery.exceptions import SoftTimeLimitExceeded
from numpy.typing import NDArray
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from media_api.imaging import photo_facts, probe
from media_api.imaging import variants as imaging
from media_api.imaging.similarity import Fingerprint
from media_api.imaging.tagging import Tagger, TagPolicy, TagResult, preprocess, shared_tagger
from media_api.jobs.contract import THUMBNAILS, JobKind
from media_api.jobs.models import JobState
from media_api.settings import Settings
from media_api.storage import keys
from media_api.storage.s3 import ObjectNotFoundError
from workers import repository
from workers.context import WorkerContext

log = logging.getLogger(__name__)


# The job's code when its task ran past the time limit of its kind.
PROCESSING_TIMEOUT = "processing-timeout"


class TransientJobError(Exception):
    """Worth retrying: storage or database unreachable. `code` is recorded on the job."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class JobBusy(Exception):
    """Another worker has the job in hand (in its batch): look again in `countdown` seconds."""

    def __init__(self, countdown: float) -> None:
        super().__init__(f"in another worker's batch; again in {countdown:.0f} s")
        self.countdown = countdown


# Errors of the infrastructure, not of the image: retry later.
TRANSIENT = (
    BotoCoreError,
    ClientError,
    OperationalError,
    DBAPIError,
    ConnectionError,
    TimeoutError,
)


def recheck(settings: Settings, data: bytes) -> None:
    """What the API validated, checked again before decoding: the format allowlist, pixels,
    frames and JPEG scans from the headers (no decode). Raises a ProbeError."""
    probe.inspect(io.BytesIO(data), settings.probe_limits)


def claim_turn(
    session: Session, image_id: uuid.UUID, kind: JobKind, task_id: str | None, lease: float
) -> repository.Claimed | None:
    """A task's message is a turn of work. It runs its own image's job while that owner is
    within its share (the job's fair slot has come); otherwise, or when its job was done by
    another turn, the pending job with the earliest slot, so an owner's burst serves other
    owners first. Last, its own job if a dead worker left it running past the lease (a failed
    job is not run again by a leftover message: only reprocess does that)."""
    return (
        repository.claim_if_due(session, image_id, kind, task_id=task_id)
        or repository.claim_next(session, kind, task_id=task_id)
        or repository.claim_stalled(session, image_id, kind, task_id=task_id, lease=lease)
    )


# How a job run picks its job: `claim_turn` for every task; a test passes its own to run
# one image's job whatever the fair order.
Claim = Callable[[Session, uuid.UUID, JobKind, str | None, float], repository.Claimed | None]


def make_variants(
    ctx: WorkerContext, image_id: uuid.UUID, task_id: str | None, *, claim: Claim = claim_turn
) -> str:
    """Run the thumbnails job this task's turn of work is for. Returns what happened, for the
    task log."""
    kind = JobKind.THUMBNAILS
    with ctx.sessions.begin() as session:
        claimed = claim(session, image_id, kind, task_id, THUMBNAILS.hard_time_limit(ctx.settings))
    if claimed is None:
        return "skipped: done already, in hand elsewhere, or image deleted"
    deadline = time.monotonic() + THUMBNAILS.soft_time_limit(ctx.settings)
    image_id = claimed.image_id
    try:
        original = ctx.store.get_bytes(claimed.original_key)
        recheck(ctx.settings, original)
        result = imaging.render(original, ctx.settings.variant_presets, ctx.settings.variant_format)
        photo = _photo_record(ctx.settings, original, result.fingerprint)
        # Celery's signal can be held off by C code or caught on its way out: check too.
        if time.monotonic() > deadline:
            raise SoftTimeLimitExceeded()
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
    except Exception as exc:
        if _timed_out(exc):  # the signal may surface wrapped by a decoder's own handling
            log.warning("thumbnails for %s: over the time limit", image_id)
            return _fail(ctx, image_id, kind, PROCESSING_TIMEOUT)
        if isinstance(exc, probe.ProbeError):
            log.warning("thumbnails for %s: refused on re-check: %s", image_id, exc.detail)
            return _fail(ctx, image_id, kind, exc.code)
        if isinstance(exc, TRANSIENT):
            log.warning("thumbnails for %s: transient %s", image_id, type(exc).__name__)
            _retry_later(ctx, image_id, kind, "storage-unavailable")
            raise TransientJobError("storage-unavailable") from exc
        # The original passed validation, so this is a decoder/encoder fault: retrying the
        # same bytes gives the same answer.
        log.exception("thumbnails for %s: render failed", image_id)
        return _fail(ctx, image_id, kind, "render-failed")

    try:
        with ctx.sessions.begin() as session:
            recorded = repository.variants_ready(
                session, claimed, records, result.placeholder, photo
            )
    except TRANSIENT as exc:  # the database away, or a deadlock it broke: the job runs again
        log.warning("thumbnails for %s: could not record (%s)", image_id, type(exc).__name__)
        _retry_later(ctx, image_id, kind, "database-unavailable")
        raise TransientJobError("database-unavailable") from exc
    prefix = keys.variants_prefix(claimed.owner_id, image_id)
    if not recorded:
        ctx.store.delete_prefix(prefix)  # the image was deleted while we worked
        return "discarded: image deleted meanwhile"
    # Variants of an earlier run in another format or preset set are no longer referenced.
    current = {record["key"] for record in records}
    for key in ctx.store.list_keys(prefix):
        if key not in current:
            ctx.store.delete(key)
    return f"ready: {len(records)} variants"


def _photo_record(
    settings: Settings, original: bytes, fingerprint: Fingerprint
) -> repository.PhotoRecord:
    """The capture facts (the location only where it may be stored) and the hashes."""
    facts = photo_facts.read_facts(original)
    return repository.PhotoRecord(
        taken_at=facts.taken_at,
        facts=facts.as_json(with_location=settings.store_location),
        fingerprint=fingerprint,
        duplicate_distance=settings.duplicate_distance,
    )


def _timed_out(exc: BaseException | None) -> bool:
    """True when Celery's soft time limit is behind `exc`, directly or as its cause."""
    while exc is not None:
        if isinstance(exc, SoftTimeLimitExceeded):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _fail(ctx: WorkerContext, image_id: uuid.UUID, kind: JobKind, code: str) -> str:
    with ctx.sessions.begin() as session:
        repository.job_failed(session, image_id, kind, code)
    return f"failed: {code}"


def _retry_later(ctx: WorkerContext, image_id: uuid.UUID, kind: JobKind, code: str) -> None:
    try:
        with ctx.sessions.begin() as session:
            repository.job_retry_later(session, image_id, kind, code)
    except TRANSIENT:
        # The database is down too: the row stays `running` and the sweep's timeout covers it.
        log.warning("could not record the retry of %s/%s", image_id, kind)


def tag_images(
    ctx: WorkerContext, image_id: uuid.UUID, task_id: str | None, *, claim: Claim = claim_turn
) -> str:
    """Run the tagging job this task's turn is for and, in the same model call, other tagging
    jobs waiting right now (batching what the queue holds). A failure here fails the tagging
    job only: the image and its variants are unaffected."""
    kind = JobKind.TAGGING
    settings = ctx.settings
    lease = settings.tag_batch_lease_seconds  # past the hard time limit (Settings checks)
    with ctx.sessions.begin() as session:
        first = claim(session, image_id, kind, task_id, lease)
        if first is None:
            if repository.state_of(session, image_id, kind) is JobState.RUNNING:
                # In another worker's batch right now: running it twice would only waste a
                # model call. Look again later: done by then, or that worker died.
                raise JobBusy(lease)
            # Only a real job takes others along; the rest have messages of their own.
            return "skipped: done already or image deleted"
        claimed = [first]
        others = repository.pending_ids(
            session, kind, exclude=first.image_id, limit=settings.tag_batch_size - 1
        )
        for other in others:
            extra = repository.claim(session, other, kind, task_id=task_id)
            if extra is not None:
                claimed.append(extra)
    try:
        return _tag_claimed(ctx, claimed)
    except SoftTimeLimitExceeded:
        log.warning("tagging %d images: over the time limit", len(claimed))
        with ctx.sessions.begin() as session:
            held = [job.image_id for job in claimed]
            repository.fail_running_jobs(session, kind, held, PROCESSING_TIMEOUT)
        return f"failed: {PROCESSING_TIMEOUT} ({len(claimed)} images)"


def _tag_claimed(ctx: WorkerContext, claimed: list[repository.Claimed]) -> str:
    """Read, re-check, decode and tag the claimed jobs; settle each."""
    kind = JobKind.TAGGING
    settings = ctx.settings

    batch: list[repository.Claimed] = []
    originals: list[bytes] = []
    try:
        for job in claimed:
            try:
                originals.append(ctx.store.get_bytes(job.original_key))
                batch.append(job)
            except ObjectNotFoundError:
                _fail(ctx, job.image_id, kind, "original-missing")
    except TRANSIENT as exc:
        for job in claimed:
            _retry_later(ctx, job.image_id, kind, "storage-unavailable")
        raise TransientJobError("storage-unavailable") from exc
    # Decode one by one, so an image the decoder refuses fails alone, not its whole batch.
    decoded: list[tuple[repository.Claimed, NDArray[np.uint8]]] = []
    for job, data in zip(batch, originals, strict=True):
        try:
            recheck(settings, data)
            decoded.append((job, preprocess(data)))
        except Exception as exc:
            if _timed_out(exc):
                raise SoftTimeLimitExceeded() from exc
            if isinstance(exc, probe.ProbeError):
                log.warning("tagging %s: refused on re-check: %s", job.image_id, exc.detail)
                _fail(ctx, job.image_id, kind, exc.code)
                continue
            log.exception("tagging %s: decode failed", job.image_id)
            _fail(ctx, job.image_id, kind, "tagging-failed")
    if not decoded:
        return "failed: nothing to tag"
    try:
        results = _tagger(settings).tag_pixels([pixels for _, pixels in decoded])
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        log.exception("tagging %d images failed", len(decoded))
        for job, _ in decoded:
            _fail(ctx, job.image_id, kind, "tagging-failed")
        return f"failed: tagging-failed ({len(decoded)} images)"
    tagged = [(job, result) for (job, _), result in zip(decoded, results, strict=True)]
    with ctx.sessions.begin() as session:
        announced = [
            (
                job,
                repository.tags_ready(
                    session,
                    job,
                    _tag_rows(result),
                    nsfw=result.nsfw,
                    flagged=result.nsfw >= settings.nsfw_threshold,
                ),
            )
            for job, result in tagged
        ]
        repository.announce_tagged(session, announced)
    return f"tagged {len(decoded)} images"


def _tagger(settings: Settings) -> Tagger:
    """The models, loaded once per process on first use (a thumbnails-only worker never pays
    for them), each with one inference thread: processes give the parallelism."""
    policy = TagPolicy(
        top_k=settings.tag_top_k,
        label_threshold=settings.tag_min_confidence,
        category_threshold=settings.tag_category_min_confidence,
        moderation_threshold=settings.nsfw_threshold,
        max_batch=settings.tag_batch_size,
    )
    return shared_tagger(policy)


def _tag_rows(result: TagResult) -> list[dict[str, Any]]:
    """Labels and categories as rows, one per name (a label wins over a same-named category)."""
    rows: dict[str, dict[str, Any]] = {}
    for kind, labels in (("category", result.categories), ("label", result.labels)):
        for label in labels:
            name = label.name.lower()[:100]
            if name not in rows or kind == "label" or label.confidence > rows[name]["confidence"]:
                rows[name] = {
                    "name": name,
                    "kind": kind,
                    "confidence": float(label.confidence),
                    "model": result.model,
                    "model_version": result.model_version,
                }
    return list(rows.values())
