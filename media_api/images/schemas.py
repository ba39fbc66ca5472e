"""Response shapes of the images API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from media_api.images.models import TITLE_MAX, Image, ImageStatus
from media_api.imaging.photo_facts import PhotoFacts
from media_api.jobs.contract import JobKind
from media_api.jobs.models import JobState
from media_api.storage.signing import Signer
from media_api.text import single_line

Title = Annotated[str, Field(max_length=TITLE_MAX), single_line]


class ImagePatch(BaseModel):
    """Only the fields sent are changed."""

    title: Title | None = None


class UploadFields(BaseModel):
    """The text fields of an upload's multipart body (the file is streamed, not modelled)."""

    title: Title | None = None
    gallery_id: uuid.UUID | None = None


class JobOut(BaseModel):
    """State of one kind of processing."""

    model_config = ConfigDict(from_attributes=True)  # read from an ImageJob row

    kind: JobKind
    state: JobState
    attempts: int
    error_code: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class SignedUrlOut(BaseModel):
    """A presigned GET: works without credentials until `expires_at`."""

    url: str
    expires_at: dt.datetime


class VariantOut(BaseModel):
    """One rendition made by the thumbnails job."""

    name: str
    width: int
    height: int
    content_type: str
    size: int
    url: str
    expires_at: dt.datetime


class TagOut(BaseModel):
    """A label or category, with the model that produced it."""

    model_config = ConfigDict(from_attributes=True)  # read from an ImageTag row

    name: str
    kind: str = Field(description="`label` (a model class) or `category` (derived).")
    confidence: float
    model: str
    model_version: str


LocalTime = Annotated[
    str,
    Field(
        description="When the photo was taken, ISO 8601: `2021-04-11T15:47:53.054000-05:00` "
        "when the file records its UTC offset, otherwise the camera's wall-clock time without "
        "one (`2008-05-30T15:56:01`); show it as the local time of the place of capture.",
        examples=["2008-05-30T15:56:01"],
    ),
]


class CameraOut(BaseModel):
    make: str | None
    model: str | None


class ExposureOut(BaseModel):
    iso: int | None
    f_number: float | None
    exposure_time: float | None = Field(description="Seconds.")
    focal_length: float | None = Field(description="Millimetres.")


class LocationOut(BaseModel):
    latitude: float
    longitude: float
    altitude: float | None = Field(description="Metres above sea level.")


class PhotoMetadataOut(BaseModel):
    """Capture facts read from the original's metadata (untrusted text, cleaned and bounded).
    Variants never carry any of it."""

    taken_at: LocalTime | None
    camera: CameraOut | None
    lens: str | None
    exposure: ExposureOut | None
    orientation: int | None = Field(description="EXIF orientation 1-8 (variants are upright).")
    colour_profile: str | None = Field(description="The embedded ICC profile's name.")
    location: LocationOut | None = Field(
        description="GPS position; only when the owner turned on `expose_location`."
    )

    @classmethod
    def of(cls, facts: PhotoFacts, *, with_location: bool) -> PhotoMetadataOut:
        camera = (
            CameraOut(make=facts.camera_make, model=facts.camera_model)
            if facts.camera_make or facts.camera_model
            else None
        )
        numbers = (facts.iso, facts.f_number, facts.exposure_time, facts.focal_length)
        exposure = (
            ExposureOut(
                iso=facts.iso,
                f_number=facts.f_number,
                exposure_time=facts.exposure_time,
                focal_length=facts.focal_length,
            )
            if any(n is not None for n in numbers)
            else None
        )
        where = facts.location if with_location else None
        return cls(
            taken_at=local_taken_at(facts),
            camera=camera,
            lens=facts.lens,
            exposure=exposure,
            orientation=facts.orientation,
            colour_profile=facts.colour_profile,
            location=None
            if where is None
            else LocationOut(
                latitude=where.latitude, longitude=where.longitude, altitude=where.altitude
            ),
        )


def local_taken_at(facts: PhotoFacts) -> str | None:
    """The capture time as the camera recorded it: with its offset, or without one when the
    file does not say (an ISO 8601 local time, not RFC 3339's `date-time`)."""
    if facts.taken_at is None:
        return None
    when = facts.taken_at if facts.offset_known else facts.taken_at.replace(tzinfo=None)
    return when.isoformat()


class ImageSummary(BaseModel):
    """An image as listings show it: everything but the job details."""

    id: uuid.UUID
    status: ImageStatus
    error_code: str | None = None
    title: str | None
    filename: str | None = Field(description="The client's file name, informational only.")
    content_type: str = Field(description="Decided from the bytes, never from the client.")
    size: int = Field(description="Bytes of the original.")
    width: int
    height: int
    frames: int
    sha256: str = Field(description="Hex SHA-256 of the original bytes.")
    created_at: dt.datetime
    taken_at: LocalTime | None
    placeholder: str | None = Field(description="BlurHash to paint while variants load.")
    original: SignedUrlOut
    variants: list[VariantOut]
    nsfw: float | None = Field(description="Moderation model score, once tagged.")
    flagged: bool | None = Field(description="nsfw reached MEDIA_NSFW_THRESHOLD.")

    @classmethod
    def fields_of(cls, image: Image, signer: Signer) -> dict[str, Any]:
        """The summary's fields, with fresh signed URLs."""
        original = signer.original(image.original_key, image.content_type, image.original_filename)
        variants = []
        for v in image.variants:
            signed = signer.variant(v["key"], v["content_type"], image.original_filename, v["name"])
            variants.append(
                VariantOut.model_validate({**v, "url": signed.url, "expires_at": signed.expires_at})
            )
        return dict(
            id=image.id,
            status=image.status,
            error_code=image.error_code,
            title=image.title,
            filename=image.original_filename,
            content_type=image.content_type,
            size=image.size_bytes,
            width=image.width,
            height=image.height,
            frames=image.frames,
            sha256=image.sha256.hex(),
            created_at=image.created_at,
            taken_at=local_taken_at(PhotoFacts.from_json(image.photo)) if image.photo else None,
            placeholder=image.placeholder,
            original=SignedUrlOut(url=original.url, expires_at=original.expires_at),
            variants=variants,
            nsfw=image.nsfw,
            flagged=image.flagged,
        )

    @classmethod
    def of(cls, image: Image, signer: Signer) -> ImageSummary:
        return cls(**cls.fields_of(image, signer))


class ImageOut(ImageSummary):
    """An image with its processing jobs and tags (the detail view)."""

    jobs: list[JobOut]
    tags: list[TagOut]
    download: SignedUrlOut = Field(description="The original, served as an attachment.")
    metadata: PhotoMetadataOut | None = Field(
        description="Capture facts; null until the thumbnails job has read them."
    )
    near_duplicates: list[uuid.UUID] = Field(
        description="The owner's images that look the same (resized, recompressed, cropped "
        "copies), nearest first; see GET /v1/images/{id}/similar."
    )

    @classmethod
    def of(cls, image: Image, signer: Signer) -> ImageOut:
        jobs = sorted(map(JobOut.model_validate, image.jobs), key=lambda j: j.kind)
        tags = list(map(TagOut.model_validate, image.tags))
        download = signer.original(
            image.original_key, image.content_type, image.original_filename, attachment=True
        )
        return cls(
            **cls.fields_of(image, signer),
            jobs=jobs,
            tags=tags,
            download=SignedUrlOut(url=download.url, expires_at=download.expires_at),
            metadata=None
            if image.photo is None
            else PhotoMetadataOut.of(
                PhotoFacts.from_json(image.photo),
                with_location=bool(image.photo.get("location")) and image.expose_location,
            ),
            near_duplicates=[pair.other_id for pair in image.duplicates],
        )


class SimilarImage(BaseModel):
    """A near-duplicate and how far its perceptual hash is (differing bits of 64)."""

    id: uuid.UUID
    distance: int
    image: ImageSummary


class SimilarPage(BaseModel):
    """The image's near-duplicates, nearest first."""

    items: list[SimilarImage]


class ImagePage(BaseModel):
    """One page of a listing; pass `next_cursor` back as `cursor` for the next one."""

    items: list[ImageSummary]
    next_cursor: str | None
    total: int | None = Field(default=None, description="With include_total=true only.")

    @classmethod
    def of(
        cls, images: list[Image], next_cursor: str | None, total: int | None, signer: Signer
    ) -> ImagePage:
        return cls(
            items=[ImageSummary.of(image, signer) for image in images],
            next_cursor=next_cursor,
            total=total,
        )
