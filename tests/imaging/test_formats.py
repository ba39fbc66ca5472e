"""The one format table: every user (probe, variants, signed URLs, settings) reads it."""

from __future__ import annotations

from typing import get_args

import pytest

from media_api.imaging import formats
from media_api.imaging.formats import CORE_FORMATS, KNOWN_FORMATS, OutputFormat


def test_every_known_format_has_a_mime_type_and_an_extension() -> None:
    assert CORE_FORMATS <= KNOWN_FORMATS
    assert sorted(KNOWN_FORMATS) == ["AVIF", "BMP", "GIF", "HEIF", "JPEG", "PNG", "TIFF", "WEBP"]
    for name in KNOWN_FORMATS:
        assert formats.by_name(name.lower()).mime_type.startswith("image/")
    assert formats.by_name("HEIF").mime_type == "image/heif"  # image/heic is told by brand


@pytest.mark.parametrize(
    ("mime_type", "ext"),
    [("image/jpeg", "jpg"), ("image/heic", "heic"), ("image/heif", "heif"), ("text/x", "bin")],
)
def test_downloads_are_named_from_the_table(mime_type: str, ext: str) -> None:
    assert formats.extension(mime_type) == ext


def test_output_formats_are_rows_of_the_table() -> None:
    written = {fmt: formats.by_name(fmt) for fmt in get_args(OutputFormat)}
    assert {fmt: (row.mime_type, row.ext) for fmt, row in written.items()} == {
        "webp": ("image/webp", "webp"),
        "jpeg": ("image/jpeg", "jpg"),
        "avif": ("image/avif", "avif"),
    }
