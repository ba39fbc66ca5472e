"""The one table of image formats: Pillow's name, MIME type and file extension.

Names are what ``probe()`` reports and ``MEDIA_ALLOWED_FORMATS`` lists; a HEIF is image/heic when
HEVC-coded, image/heif otherwise. Variants are written in one of the ``OutputFormat`` formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal


@dataclass(frozen=True, slots=True)
class Format:
    """One row: a MIME type, the format it belongs to and the extension files of it get."""

    name: str
    mime_type: str
    ext: str


FORMATS: Final = (
    Format("JPEG", "image/jpeg", "jpg"),
    Format("PNG", "image/png", "png"),
    Format("GIF", "image/gif", "gif"),
    Format("WEBP", "image/webp", "webp"),
    Format("TIFF", "image/tiff", "tiff"),
    Format("BMP", "image/bmp", "bmp"),
    Format("AVIF", "image/avif", "avif"),
    Format("HEIF", "image/heif", "heif"),
    Format("HEIF", "image/heic", "heic"),  # the HEVC-coded kind, what phones write
)

# Accepted by default; the others are opt-in (MEDIA_ALLOWED_FORMATS).
CORE_FORMATS: Final = frozenset({"JPEG", "PNG", "GIF", "WEBP"})
KNOWN_FORMATS: Final = frozenset(row.name for row in FORMATS)

# What variants are encoded as (MEDIA_VARIANT_FORMAT): lower-case names of rows above.
OutputFormat = Literal["webp", "jpeg", "avif"]

_BY_NAME: Final = {row.name: row for row in reversed(FORMATS)}  # a name's first row wins
_BY_MIME_TYPE: Final = {row.mime_type: row for row in FORMATS}


def by_name(name: str) -> Format:
    """The row of a format name (any case); KeyError for a name not in the table."""
    return _BY_NAME[name.upper()]


def extension(mime_type: str, default: str = "bin") -> str:
    """The file extension for a MIME type, `default` for one not in the table."""
    row = _BY_MIME_TYPE.get(mime_type)
    return default if row is None else row.ext
