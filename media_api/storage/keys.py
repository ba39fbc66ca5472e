"""Every object key format in one place, so API, workers, gc and tests agree on the layout.

Keys are deterministic in (owner, image, name): a rerun of a job overwrites, never duplicates.
"""

from __future__ import annotations

import uuid
from typing import Final

ORIGINALS: Final = "originals/"
VARIANTS: Final = "variants/"
QUARANTINE: Final = "quarantine/"
# The prefixes of images and variants: what gc lists to find objects no row points at.
ROOTS: Final = (ORIGINALS, VARIANTS)
# Uploads not yet accepted: their objects belong to `uploads` rows, so gc's image-row check
# (ROOTS) must not see them; the upload sweep and gc's upload report list these.
UPLOAD_ROOTS: Final = (QUARANTINE,)


def original_key(owner_id: uuid.UUID, image_id: uuid.UUID) -> str:
    """Where the uploaded bytes live; no extension, the content type is stored on the object."""
    return f"{originals_prefix(owner_id)}{image_id}"


def originals_prefix(owner_id: uuid.UUID) -> str:
    """The prefix under which every original of one owner lives."""
    return f"{ORIGINALS}{owner_id}/"


def variant_key(owner_id: uuid.UUID, image_id: uuid.UUID, name: str, ext: str) -> str:
    """Where one derived rendition (thumb, medium, ...) lives."""
    return f"{variants_prefix(owner_id, image_id)}{name}.{ext}"


def variants_prefix(owner_id: uuid.UUID, image_id: uuid.UUID) -> str:
    """The prefix under which every variant of one image lives (for deletion)."""
    return f"{VARIANTS}{owner_id}/{image_id}/"


def quarantine_key(owner_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    """Where a tus or direct upload's bytes wait for validation, before promotion."""
    return f"{quarantine_prefix(owner_id)}{upload_id}"


def quarantine_prefix(owner_id: uuid.UUID) -> str:
    """The prefix under which every unaccepted upload of one owner lives."""
    return f"{QUARANTINE}{owner_id}/"
