"""Near-duplicate SQL, built once as Core statements: the workers write the pairs, the API and
the benchmark read them. Each function returns a statement and runs nothing.

The lookup is multi-index hashing: each 64-bit hash is cut into four 16-bit bands, each behind
an index of its own; a hash within distance t of the query equals it, in some band, up to
floor(t / 4) flipped bits, so probing those few band values finds every candidate.
"""

from __future__ import annotations

import uuid
from itertools import combinations

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Delete,
    Insert,
    Select,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import BIT
from sqlalchemy.orm import InstrumentedAttribute

from media_api.images.models import BANDS, Image, ImageDuplicate, band_expression
from media_api.imaging.similarity import Fingerprint

BAND_BITS = 16
# The nearest this many are linked per image, so a library of many near-identical pictures
# (blank frames, bursts) grows linearly, not quadratically.
MAX_LINKED = 50


def band_probes(hashes: tuple[int, ...], band: int, radius: int) -> list[int]:
    """The values of one band within `radius` flipped bits of any of the hashes' own."""
    probes: set[int] = set()
    for value in ((h >> (BAND_BITS * band)) & 0xFFFF for h in hashes):
        probes.add(value)
        for flips in range(1, radius + 1):
            for bits in combinations(range(BAND_BITS), flips):
                probes.add(value ^ sum(1 << bit for bit in bits))
    return sorted(probes)


def _bits_apart(column: InstrumentedAttribute[int | None], value: int) -> ColumnElement[int]:
    # Postgres 14+: bit_count over the XOR as a 64-bit string.
    return func.bit_count(cast(column.op("#")(literal(value, BigInteger)), BIT(64)))


def _distance(fp: Fingerprint) -> ColumnElement[int]:
    """As `Fingerprint.distance`: frame to frame, or either frame to the other's centre."""
    return func.least(
        _bits_apart(Image.phash, fp.whole),
        _bits_apart(Image.phash, fp.centre),
        _bits_apart(Image.phash_centre, fp.whole),
    )


def _candidates(fp: Fingerprint, threshold: int) -> ColumnElement[bool]:
    """Rows sharing a band, up to the radius, with a hash pair the distance compares."""
    radius = threshold // BANDS
    probed = {"phash": (fp.whole, fp.centre), "phash_centre": (fp.whole,)}
    return or_(
        *(
            literal_column(band_expression(column, band)).in_(band_probes(hashes, band, radius))
            for column, hashes in probed.items()
            for band in range(BANDS)
        )
    )


def nearest(
    owner_id: uuid.UUID,
    fp: Fingerprint,
    threshold: int,
    *,
    exclude: uuid.UUID | None = None,
    limit: int = MAX_LINKED,
) -> Select[uuid.UUID, int]:
    """The owner's images within `threshold` of the fingerprint, nearest first, as (id,
    distance)."""
    distance = _distance(fp).label("distance")
    stmt = select(Image.id, distance).where(
        Image.owner_id == owner_id,
        Image.phash.is_not(None),
        _candidates(fp, threshold),
        _distance(fp) <= threshold,
    )
    if exclude is not None:
        stmt = stmt.where(Image.id != exclude)
    return stmt.order_by(distance, Image.id).limit(limit)


def lock_owner(owner_id: uuid.UUID) -> Select[object]:
    """Serialise linking within one owner until commit, so two near-duplicates processed at
    once still find each other (the second looks after the first committed)."""
    key = func.hashtextextended(literal(f"image-duplicates:{owner_id}"), 0)
    return select(func.pg_advisory_xact_lock(key))


def unlink(image_id: uuid.UUID) -> Delete:
    """Forget the image's pairs in both directions (its hash is about to change)."""
    return delete(ImageDuplicate).where(
        or_(ImageDuplicate.image_id == image_id, ImageDuplicate.other_id == image_id)
    )


def link(owner_id: uuid.UUID, image_id: uuid.UUID, fp: Fingerprint, threshold: int) -> Insert:
    """Pair the image with its nearest neighbours. The neighbours are read FOR KEY SHARE: one
    deleted meanwhile is waited for and skipped instead of failing the foreign key."""
    found = (
        nearest(owner_id, fp, threshold, exclude=image_id)
        .with_for_update(key_share=True)
        .subquery()
    )
    rows = select(literal(image_id), found.c.id, found.c.distance)
    return (
        insert(ImageDuplicate)
        .from_select(["image_id", "other_id", "distance"], rows)
        .returning(ImageDuplicate.other_id, ImageDuplicate.distance)
    )


def link_back(image_id: uuid.UUID, others: list[tuple[uuid.UUID, int]]) -> Insert:
    """The same pairs seen from each neighbour."""
    return insert(ImageDuplicate).values(
        [{"image_id": other, "other_id": image_id, "distance": d} for other, d in others]
    )


def linked(image_id: uuid.UUID, limit: int) -> Select[uuid.UUID, int]:
    """The image's near-duplicates, nearest first, as (id, distance)."""
    return (
        select(ImageDuplicate.other_id, ImageDuplicate.distance)
        .where(ImageDuplicate.image_id == image_id)
        .order_by(ImageDuplicate.distance, ImageDuplicate.other_id)
        .limit(limit)
    )


def linked_pairs(image_id: uuid.UUID, limit: int) -> Select[ImageDuplicate]:
    """The image's pair rows, nearest first."""
    return (
        select(ImageDuplicate)
        .where(ImageDuplicate.image_id == image_id)
        .order_by(ImageDuplicate.distance, ImageDuplicate.other_id)
        .limit(limit)
    )


def has_duplicates() -> ColumnElement[bool]:
    """For a listing filter: the image is linked to at least one other."""
    return select(ImageDuplicate.other_id).where(ImageDuplicate.image_id == Image.id).exists()
