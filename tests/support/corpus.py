"""The shared upload corpus (tests/fixtures/corpus): its manifest, typed, for every test."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
ALL_CODES = frozenset({"unsupported-media-type", "image-too-large", "corrupt-image", "empty-file"})
POLICY_FORMAT = {"ext:tiff": "TIFF", "ext:bmp": "BMP", "ext:avif": "AVIF", "ext:heif": "HEIF"}
# The manifest's format column is Pillow's name; sniff() names the container (MPO is a JPEG).
SNIFFED_AS = {"MPO": "JPEG"}
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
    "AVIF": "image/avif",
    "HEIF": "image/heic",  # every HEIF the corpus accepts is HEVC-coded
}


@dataclass(frozen=True)
class Row:
    """One MANIFEST.tsv line, typed."""

    file: str
    verdict: str
    reason: str
    policy: str
    format: str
    width: int
    height: int
    display_width: int
    display_height: int
    frames: int
    size: int
    sha256: str
    notes: str

    @property
    def path(self) -> Path:
        """Absolute path inside the fixture copy."""
        return CORPUS / self.file


def _int(value: str) -> int:
    """Blank for rejected rows, where the dimensions are never compared."""
    return int(value) if value else -1


def load_manifest() -> list[Row]:
    """Read the manifest once at collection, so each row becomes its own test id."""
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        return [
            Row(
                file=r["file"],
                verdict=r["verdict"],
                reason=r["reason"],
                policy=r["policy"],
                format=r["format"],
                width=_int(r["width"]),
                height=_int(r["height"]),
                display_width=_int(r["display_width"]),
                display_height=_int(r["display_height"]),
                frames=_int(r["frames"]),
                size=int(r["bytes"]),
                sha256=r["sha256"],
                notes=r["notes"],
            )
            for r in csv.DictReader(fh, delimiter="\t")
        ]


ROWS = load_manifest()
ACCEPTED = [r for r in ROWS if r.verdict == "accept"]
EXTENDED = [r for r in ROWS if r.policy != "core"]
CORE_ROWS = [r for r in ROWS if r.policy == "core"]


def params(rows: list[Row]) -> list[object]:
    """Test ids are the corpus paths, so a failure names the file."""
    return [pytest.param(r, id=r.file) for r in rows]


def acceptable_codes(row: Row) -> frozenset[str]:
    """The preferred code, widened only where the manifest notes allow another one."""
    if row.reason == "empty-file":
        return ALL_CODES  # README: 400, 415 or 422 all pass, as long as it is a ProbeError
    codes = {row.reason}
    if re.search(r"\b415\b[^;.]*\b(also|equally)\b", row.notes):
        codes.add("unsupported-media-type")
    if re.search(r"\b422\b[^;.]*\balso\b", row.notes):
        codes |= {"corrupt-image", "image-too-large"}
    for code in ("corrupt-image", "image-too-large", "unsupported-media-type"):
        if re.search(rf"\b{code} also\b", row.notes):
            codes.add(code)
    return frozenset(codes)
