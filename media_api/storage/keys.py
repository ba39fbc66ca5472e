"""Every object key format in one place, so API, workers, gc and tests agree on the layout.

Keys are deterministic in (owner, image, name): a rerun of a job overwrites, never duplicates.
"""

from __future__ import annotations

import uuid
from typing import Final

ORIGINALS: Final = "originals/"
VARIANTS: Final = "variants/"
# Every prefix the service writes under: what gc lists to find objects no row points at.
ROOTS: Final = (ORIGINALS, VARIANTS)


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
