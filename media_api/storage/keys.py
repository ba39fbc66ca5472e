"""Every object key format in one place, so API, workers and gc agree on the layout.

Keys are deterministic in (owner, image, name): a rerun of a job overwrites, never duplicates.
"""

from __future__ import annotations

import uuid


def original_key(owner_id: uuid.UUID, image_id: uuid.UUID) -> str:
    """Where the uploaded bytes live; no extension, the content type is stored on the object."""
    return f"originals/{owner_id}/{image_id}"


def variant_key(owner_id: uuid.UUID, image_id: uuid.UUID, name: str, ext: str) -> str:
    """Where one derived rendition (thumb, medium, ...) lives."""
    return f"variants/{owner_id}/{image_id}/{name}.{ext}"


def image_prefix(owner_id: uuid.UUID, image_id: uuid.UUID) -> str:
    """The prefix under which every variant of one image lives (for deletion)."""
    return f"variants/{owner_id}/{image_id}/"
