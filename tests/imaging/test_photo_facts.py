"""Photo facts against an independent EXIF reader (exifread) on the corpus, plus hostile input."""

from __future__ import annotations

import datetime
import io
import json
import random
import re
import struct
import unicodedata
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import exifread
import pytest
from PIL import ExifTags, Image, ImageFile, TiffImagePlugin

from media_api.imaging.photo_facts import Location, PhotoFacts, read_facts
from tests.support.corpus import ACCEPTED, CORPUS, ROWS, Row
from tests.support.corpus import params as _params

# Orientation that Pillow takes from outside the EXIF block, which exifread does not read.
NOT_FROM_EXIF = {"orientation/png_xmp_orientation.png", "orientation/avif_irot1_imir0.avif"}

# --- an independent way to the EXIF block where exifread cannot find it by itself ---------------


def _boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISO-BMFF boxes in buf[start:end] as (type, body start, end)."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", buf[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", buf[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        yield kind, pos + header, pos + size
        pos += size


def _bmff_exif(buf: bytes) -> bytes | None:
    """The TIFF block of a HEIF/AVIF 'Exif' item, located through iinf and iloc."""
    meta = next(((s, e) for k, s, e in _boxes(buf, 0, len(buf)) if k == b"meta"), None)
    if meta is None:
        return None
    children = {k: (s, e) for k, s, e in _boxes(buf, meta[0] + 4, meta[1])}
    start, end = children[b"iinf"]
    exif_id = None
    for _, s, _e in _boxes(buf, start + 4 + (2 if buf[start] == 0 else 4), end):
        version = buf[s]
        if version == 2:
            item_id, name_at = struct.unpack(">H", buf[s + 4 : s + 6])[0], s + 8
        elif version == 3:
            item_id, name_at = struct.unpack(">I", buf[s + 4 : s + 8])[0], s + 10
        else:
            continue
        if buf[name_at : name_at + 4] == b"Exif":
            exif_id = item_id
    start, _ = children[b"iloc"]
    version, pos = buf[start], start + 4

    def take(n: int) -> int:
        nonlocal pos
        value = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
        return value

    sizes = take(1), take(1)
    off_size, len_size, base_size = sizes[0] >> 4, sizes[0] & 15, sizes[1] >> 4
    idx_size = sizes[1] & 15 if version in (1, 2) else 0
    for _ in range(take(2 if version < 2 else 4)):
        item_id = take(2 if version < 2 else 4)
        if version in (1, 2):
            take(2)  # construction method
        take(2)  # data reference index
        base = take(base_size)
        parts = []
        for _ in range(take(2)):
            take(idx_size)
            offset, length = take(off_size), take(len_size)
            parts.append(buf[base + offset : base + offset + length])
        if item_id == exif_id:
            item = b"".join(parts)
            return item[4 + int.from_bytes(item[:4], "big") :]
    return None


def _png_chunks(buf: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = 8
    while pos + 12 <= len(buf):
        length, kind = struct.unpack(">I4s", buf[pos : pos + 8])
        yield kind, buf[pos + 8 : pos + 8 + length]
        pos += 12 + length


def _png_exif(buf: bytes) -> bytes | None:
    """An eXIf chunk, or ImageMagick's hex 'Raw profile type exif' text chunk."""
    for kind, body in _png_chunks(buf):
        if kind == b"eXIf":
            return body
        if kind == b"tEXt" and body.startswith(b"Raw profile type exif\0"):
            hex_lines = body.split(b"\0", 1)[1].decode("ascii").split("\n")[3:]
            return bytes.fromhex("".join(hex_lines))
    return None


def _jpeg_icc(buf: bytes) -> bytes | None:
    """The ICC profile from a JPEG's APP2 ICC_PROFILE segments, in sequence order."""
    parts: dict[int, bytes] = {}
    pos = 2
    while pos + 4 <= len(buf) and buf[pos] == 0xFF and buf[pos + 1] not in (0xDA, 0xD9):
        marker, length = buf[pos + 1], struct.unpack(">H", buf[pos + 2 : pos + 4])[0]
        body = buf[pos + 4 : pos + 2 + length]
        if marker == 0xE2 and body.startswith(b"ICC_PROFILE\0"):
            parts[body[12]] = body[14:]
        pos += 2 + length
    return b"".join(parts[k] for k in sorted(parts)) or None


def _png_icc(buf: bytes) -> bytes | None:
    for kind, body in _png_chunks(buf):
        if kind == b"iCCP":
            name_end = body.index(b"\0")
            return zlib.decompress(body[name_end + 2 :])
    return None


def _icc_description(icc: bytes) -> str:
    """The 'desc' tag read straight from the ICC tag table (v2 text or v4 mluc), without lcms."""
    (count,) = struct.unpack(">I", icc[128:132])
    for i in range(count):
        sig, offset, size = struct.unpack(">4sII", icc[132 + 12 * i : 144 + 12 * i])
        if sig != b"desc":
            continue
        tag = icc[offset : offset + size]
        if tag[:4] == b"desc":
            (n,) = struct.unpack(">I", tag[8:12])
            return tag[12 : 12 + n].rstrip(b"\0").decode("latin-1")
        if tag[:4] == b"mluc":
            length, at = struct.unpack(">II", tag[20:28])
            return tag[at : at + length].decode("utf-16-be").rstrip("\0")
    raise AssertionError("no desc tag")


def _exifread_tags(path: Path) -> dict[str, Any]:
    """exifread on the file; on the extracted block for AVIF (it asserts) and PNG (it skips)."""
    data = path.read_bytes()
    try:
        tags: dict[str, Any] = exifread.process_file(io.BytesIO(data), details=False)
    except Exception:
        tags = {}
    if tags:
        return tags
    block = None
    if data.startswith(b"\x89PNG"):
        block = _png_exif(data)
    elif data[4:8] == b"ftyp":
        block = _bmff_exif(data)
    if block is None:
        return {}
    block = block.removeprefix(b"Exif\0\0")
    result: dict[str, Any] = exifread.process_file(io.BytesIO(block), details=False)
    return result


# --- what the facts should be, computed from exifread's tags and the brief's rules -------------


def _text(tags: dict[str, Any], key: str) -> str | None:
    if key not in tags:
        return None
    value = str(tags[key].values).replace("\0", "")
    return " ".join(value.split())[:128] or None


def _ratio(value: Any) -> float | None:
    try:
        return float(value)
    except (ZeroDivisionError, ValueError, TypeError, OverflowError):
        return None


def _real(tags: dict[str, Any], key: str, low: float, high: float, *, open_low: bool) -> Any:
    if key not in tags or len(tags[key].values) != 1:
        return None
    value = _ratio(tags[key].values[0])
    if value is None or value > high or value < low or (open_low and value == low):
        return None
    return pytest.approx(value)


def _expected_time(tags: dict[str, Any]) -> str | None:
    """taken_at as as_json writes it, from the brief's fallback chain."""
    chain = [
        ("EXIF DateTimeOriginal", "EXIF SubSecTimeOriginal", "EXIF OffsetTimeOriginal"),
        ("EXIF DateTimeDigitized", "EXIF SubSecTimeDigitized", "EXIF OffsetTimeDigitized"),
        ("Image DateTime", "EXIF SubSecTime", "EXIF OffsetTime"),
    ]
    for date_key, subsec_key, offset_key in chain:
        text = _text(tags, date_key)
        try:
            moment = datetime.datetime.strptime(text or "", "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue
        if not 1800 <= moment.year <= 2200:
            continue
        subsec = _text(tags, subsec_key)
        if subsec and subsec.isdigit():
            moment = moment.replace(microsecond=int(subsec[:6].ljust(6, "0")))
        for key in (offset_key, "EXIF OffsetTime"):
            try:
                offset = datetime.datetime.strptime(_text(tags, key) or "", "%z").tzinfo
            except ValueError:
                continue
            return moment.replace(tzinfo=offset).isoformat()
        return moment.isoformat()
    return None


def _expected_location(tags: dict[str, Any]) -> dict[str, Any] | None:
    def coordinate(key: str, negative: str, limit: float) -> float | None:
        if key not in tags or len(tags[key].values) != 3:
            return None
        parts = [_ratio(v) for v in tags[key].values]
        if any(p is None or p < 0 for p in parts):
            return None
        d, m, s = (p or 0.0 for p in parts)
        value = d + m / 60 + s / 3600
        ref = _text(tags, key + "Ref")
        if value > limit or ref not in (("N", "S") if limit == 90 else ("E", "W")):
            return None
        return -value if ref == negative else value

    latitude = coordinate("GPS GPSLatitude", "S", 90)
    longitude = coordinate("GPS GPSLongitude", "W", 180)
    if latitude is None or longitude is None:
        return None
    place: dict[str, Any] = {
        "latitude": pytest.approx(latitude),
        "longitude": pytest.approx(longitude),
    }
    altitude = _real(tags, "GPS GPSAltitude", 0, 100_000, open_low=False)
    ref = tags["GPS GPSAltitudeRef"].values[0] if "GPS GPSAltitudeRef" in tags else 0
    if altitude is not None and ref in (0, 1):
        place["altitude"] = -altitude if ref == 1 else altitude
    return place


def _expected(tags: dict[str, Any]) -> dict[str, Any]:
    """The EXIF part of as_json(with_location=True), from exifread's view of the file."""
    iso = tags["EXIF ISOSpeedRatings"].values[0] if "EXIF ISOSpeedRatings" in tags else None
    orientation = tags["Image Orientation"].values[0] if "Image Orientation" in tags else None
    taken_at = _expected_time(tags)
    out = {
        "taken_at": taken_at,
        "offset_known": None if taken_at is None else bool(re.search(r"[+-]\d\d:\d\d$", taken_at)),
        "camera_make": _text(tags, "Image Make"),
        "camera_model": _text(tags, "Image Model"),
        "lens": _text(tags, "EXIF LensModel"),
        "iso": iso if isinstance(iso, int) and 1 <= iso <= 10**7 else None,
        "f_number": _real(tags, "EXIF FNumber", 0.5, 128, open_low=False),
        "exposure_time": _real(tags, "EXIF ExposureTime", 0, 3600, open_low=True),
        "focal_length": _real(tags, "EXIF FocalLength", 0, 10_000, open_low=True),
        "orientation": orientation if orientation in range(1, 9) else None,
        "location": _expected_location(tags),
    }
    return {key: value for key, value in out.items() if value is not None}


def _exif_part(facts: PhotoFacts) -> dict[str, object]:
    """as_json without the ICC description, which is checked against another reader."""
    out = facts.as_json(with_location=True)
    out.pop("colour_profile", None)
    return out


READABLE = [r for r in ACCEPTED if r.file not in NOT_FROM_EXIF]
EXIF_PHOTOS = [
    "valid/jpeg_camera_canon40d_exif.jpg",
    "valid/jpeg_gps_exif_small.jpg",
    "valid/heic_iphone_photo.heic",
    "orientation/avif_irot_orientation6.avif",
    "orientation/jpeg_landscape_exif6.jpg",
    "tricky/jpeg_bad_exif_ifd.jpg",
    "malicious/xss_in_all_metadata.jpg",
    "tricky/jpeg_corrupted_camera.jpg",
]


@pytest.mark.parametrize("row", _params(READABLE))
def test_facts_match_exifread(row: Row) -> None:
    """Every fact equals what exifread reports for the same file (empty where it finds none)."""
    expected = _expected(_exifread_tags(row.path))
    assert _exif_part(read_facts(row.path.read_bytes())) == expected


@pytest.mark.parametrize("name", EXIF_PHOTOS)
def test_named_photos_have_exif(name: str) -> None:
    """The brief's photos really carry EXIF that exifread (or the block extractor) can read."""
    tags = _exifread_tags(CORPUS / name)
    assert _expected(tags)
    assert _exif_part(read_facts((CORPUS / name).read_bytes())) == _expected(tags)


def test_camera_photos_yield_the_full_set() -> None:
    """A guard against a vacuous comparison: the real photos give time, camera and exposure."""
    for name in ("valid/heic_iphone_photo.heic", "orientation/avif_irot_orientation6.avif"):
        facts = read_facts((CORPUS / name).read_bytes())
        assert facts.taken_at is not None
        assert None not in (facts.camera_model, facts.lens, facts.iso, facts.f_number)
        assert None not in (facts.exposure_time, facts.focal_length, facts.location)
    heic = read_facts((CORPUS / "valid/heic_iphone_photo.heic").read_bytes())
    assert heic.offset_known
    assert heic.location is not None
    assert heic.location.longitude < 0  # GPSLongitudeRef W


@pytest.mark.parametrize("row", _params([r for r in ACCEPTED if r.file.startswith("orientation/")]))
def test_orientation_matches_exifread(row: Row) -> None:
    """EXIF orientation as exifread reads it; XMP or irot/imir where there is no EXIF tag."""
    facts = read_facts(row.path.read_bytes())
    if row.file == "orientation/png_xmp_orientation.png":
        xmp = re.search(rb'tiff:Orientation(?:="|>)(\d)', row.path.read_bytes())
        assert xmp is not None
        assert facts.orientation == int(xmp[1])
    elif row.file == "orientation/avif_irot1_imir0.avif":
        # No EXIF at all: the container's irot/imir, which turn the stored size (manifest).
        assert facts.orientation in (5, 6, 7, 8)
        assert (row.display_width, row.display_height) == (row.height, row.width)
    else:
        tags = _exifread_tags(row.path)
        value = tags["Image Orientation"].values[0] if "Image Orientation" in tags else None
        assert facts.orientation == (value if value in range(1, 9) else None)


def _icc_rows() -> list[tuple[Row, bytes]]:
    found = []
    for row in ACCEPTED:
        data = row.path.read_bytes()
        if row.format in ("JPEG", "MPO"):
            icc = _jpeg_icc(data)
        elif row.format == "PNG":
            icc = _png_icc(data)
        else:
            continue
        if icc is not None:
            found.append((row, icc))
    return found


ICC_ROWS = _icc_rows()


def test_corpus_has_icc_profiles() -> None:
    assert len(ICC_ROWS) >= 5


@pytest.mark.parametrize(("row", "icc"), [pytest.param(r, i, id=r.file) for r, i in ICC_ROWS])
def test_colour_profile_is_the_icc_description(row: Row, icc: bytes) -> None:
    """The description lcms reports equals the 'desc' tag parsed straight from the profile."""
    expected = " ".join(_icc_description(icc).split())
    assert read_facts(row.path.read_bytes()).colour_profile == expected


@pytest.mark.parametrize("row", _params(ROWS))
def test_never_raises_on_the_corpus(row: Row) -> None:
    """Rejected files too: bombs, crashers and non-images give facts or empty facts."""
    facts = read_facts(row.path.read_bytes())
    assert isinstance(facts, PhotoFacts)
    _assert_clean(facts)


def test_no_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Header only: with every plugin's load() made to fail, the facts are all still there."""
    before = {r.file: read_facts(r.path.read_bytes()) for r in ACCEPTED}
    calls: list[str] = []

    def refuse(self: ImageFile.ImageFile) -> None:
        calls.append(type(self).__name__)
        raise AssertionError("pixels decoded")

    pending: list[type] = [ImageFile.ImageFile]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "load" in vars(cls):
            monkeypatch.setattr(cls, "load", refuse)
    after = {r.file: read_facts(r.path.read_bytes()) for r in ACCEPTED}
    assert calls == []
    assert after == before
    assert sum(1 for facts in after.values() if facts != PhotoFacts()) >= 20


# --- hostile EXIF ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _assert_clean(facts: PhotoFacts) -> None:
    for value in (
        facts.camera_make,
        facts.camera_model,
        facts.lens,
        facts.colour_profile,
    ):
        if value is None:
            continue
        assert 0 < len(value) <= 128
        assert value == " ".join(value.split())
        assert not _CONTROL.search(value)
        assert all(unicodedata.category(ch) not in ("Cc", "Cf", "Cs") for ch in value)
    json.dumps(facts.as_json(with_location=True), allow_nan=False)


def _hostile_png(build: Any) -> bytes:
    """A PNG carrying an EXIF block the test wrote; PNG because eXIf has no 64 KB limit."""
    exif = Image.Exif()
    build(exif)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(
        buf, "PNG", exif=exif.tobytes()
    )  # an Exif with an empty IFD0 is falsy
    return buf.getvalue()


def _nasty(exif: Image.Exif) -> None:
    exif[ExifTags.Base.Make] = "A" * 1_000_000
    exif[ExifTags.Base.Model] = b"Ca\x00non\x07\tEOS\x1b\xc2\x85\xe2\x80\xae 5D\x7f\r\n"
    exif[ExifTags.Base.DateTime] = "1799:12:31 23:59:59"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.LensModel] = "<script>alert(1)</script>"
    sub[ExifTags.Base.FNumber] = TiffImagePlugin.IFDRational(7, 0)
    sub[ExifTags.Base.ExposureTime] = TiffImagePlugin.IFDRational(0, 0)
    sub[ExifTags.Base.FocalLength] = TiffImagePlugin.IFDRational(50_000, 1)
    sub[ExifTags.Base.ISOSpeedRatings] = 0
    sub[ExifTags.Base.DateTimeOriginal] = "0000:00:00 00:00:00"
    sub[ExifTags.Base.DateTimeDigitized] = "2021:02:30 10:00:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (91.0, 0.0, 0.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (10.0, 0.0, 0.0)


def test_hostile_exif_gives_bounded_clean_text_or_none() -> None:
    data = _hostile_png(_nasty)
    facts = read_facts(data)
    _assert_clean(facts)
    assert facts.camera_make == "A" * 128
    assert facts.camera_model == "Canon EOS 5D"  # NUL, BEL, ESC, NEL, RLO, DEL dropped
    assert facts.lens == "<script>alert(1)</script>"  # text, left for textContent to show
    assert facts.f_number is None  # 7/0
    assert facts.exposure_time is None  # 0/0
    assert facts.focal_length is None  # 50 m
    assert facts.iso is None
    assert facts.taken_at is None  # year 0, 30 February, year 1799
    assert facts.location is None  # latitude 91


@pytest.mark.parametrize(
    ("offset", "expected"),
    [("+09:00", "+09:00"), ("-05:30", "-05:30"), ("+25:00", None), ("Z", None), ("  :  ", None)],
)
def test_offsets(offset: str, expected: str | None) -> None:
    def build(exif: Image.Exif) -> None:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        sub[ExifTags.Base.DateTimeOriginal] = "2008:05:30 15:56:01"
        sub[ExifTags.Base.OffsetTimeOriginal] = offset

    facts = read_facts(_hostile_png(build))
    assert facts.taken_at is not None
    assert facts.offset_known is (expected is not None)
    shown = facts.as_json(with_location=False)["taken_at"]
    assert shown == "2008-05-30T15:56:01" + (expected or "")
    if expected is None:
        assert facts.taken_at.tzinfo is datetime.UTC


def test_gps_south_west_below_sea_level() -> None:
    def build(exif: Image.Exif) -> None:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps[ExifTags.GPS.GPSLatitudeRef] = "S"
        gps[ExifTags.GPS.GPSLatitude] = (33.0, 51.0, 36.0)
        gps[ExifTags.GPS.GPSLongitudeRef] = "W"
        gps[ExifTags.GPS.GPSLongitude] = (70.0, 30.0, 0.0)
        gps[ExifTags.GPS.GPSAltitudeRef] = b"\x01"
        gps[ExifTags.GPS.GPSAltitude] = TiffImagePlugin.IFDRational(4285, 10)

    facts = read_facts(_hostile_png(build))
    assert facts.location == Location(
        pytest.approx(-(33 + 51 / 60 + 36 / 3600)),  # type: ignore[arg-type]
        -70.5,
        pytest.approx(-428.5),  # type: ignore[arg-type]
    )


def _app1_span(jpeg: bytes) -> tuple[int, int]:
    pos = 2
    while jpeg[pos + 1] != 0xE1:
        pos += 2 + struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
    return pos + 4, pos + 2 + struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]


def test_mutated_app1_never_raises() -> None:
    """200 seeded mutations of a camera JPEG's EXIF segment: facts or empty facts, always clean."""
    original = (CORPUS / "valid/jpeg_camera_canon40d_exif.jpg").read_bytes()
    start, end = _app1_span(original)
    rng = random.Random(20_240_601)
    survivors = 0
    for case in range(200):
        data = bytearray(original)
        if case % 4 == 3:  # a random slice overwritten with random bytes
            at = rng.randrange(start, end)
            data[at : at + 64] = rng.randbytes(64)
        else:
            for _ in range(rng.randint(1, 1 + case % 20)):
                data[rng.randrange(start + 6, end)] = rng.randrange(256)
        facts = read_facts(bytes(data))
        _assert_clean(facts)
        survivors += facts != PhotoFacts()
    assert survivors > 0  # most mutations leave something readable


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00" + b"\xff" * 64, b"\x00" * 1000],
)
def test_garbage_gives_empty_facts(data: bytes) -> None:
    assert read_facts(data) == PhotoFacts()


# --- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXIF_PHOTOS)
def test_json_round_trip(name: str) -> None:
    facts = read_facts((CORPUS / name).read_bytes())
    stored = json.loads(json.dumps(facts.as_json(with_location=True), allow_nan=False))
    assert PhotoFacts.from_json({**stored, "future_field": [1, 2]}) == facts


def test_json_leaves_out_location_and_nones() -> None:
    facts = read_facts((CORPUS / "valid/heic_iphone_photo.heic").read_bytes())
    assert facts.location is not None
    public = facts.as_json(with_location=False)
    assert "location" not in public
    assert None not in public.values()
    assert "location" in facts.as_json(with_location=True)
    assert PhotoFacts.from_json(public).location is None


def test_json_taken_at_without_offset_is_naive_text() -> None:
    tags = _exifread_tags(CORPUS / "valid/jpeg_camera_canon40d_exif.jpg")
    facts = read_facts((CORPUS / "valid/jpeg_camera_canon40d_exif.jpg").read_bytes())
    raw = str(tags["EXIF DateTimeOriginal"].values)
    assert facts.as_json(with_location=False)["taken_at"] == raw.replace(":", "-", 2).replace(
        " ", "T"
    )
    assert not facts.offset_known
    assert facts.taken_at is not None
    assert facts.taken_at.tzinfo is datetime.UTC
