"""A photo's capture facts (time, camera, exposure, colour profile, place) read from its headers.

Pure (standard library, Pillow, pillow_heif through ``probe``). ``read_facts()`` never raises and
never decodes pixels: the image already passed ``probe()``, but its metadata is untrusted, so
every string is cleaned to bounded plain text and every number outside a plausible range is
dropped rather than reported (docs/imaging.md, "Photo facts").
"""

from __future__ import annotations

import datetime
import io
import math
import numbers
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from PIL import ExifTags, Image, ImageCms

from . import probe

__all__ = ["Location", "PhotoFacts", "read_facts"]

MAX_TEXT_CHARS: Final = 128
# A hostile tag can be megabytes long; only this much of it is ever looked at.
_MAX_RAW_TEXT_BYTES: Final = 4096
# Unicode categories that are never plain text: controls, format (bidi overrides, zero-width),
# surrogates, private use and unassigned code points.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})

_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_SUBSEC = re.compile(r"\d{1,9}")
_MIN_YEAR: Final = 1800
_MAX_YEAR: Final = 2200
_MAX_OFFSET: Final = datetime.timedelta(hours=14)  # the widest offset in use (Kiribati)

_MAX_ISO: Final = 10_000_000
_F_NUMBER_RANGE: Final = (0.5, 128.0)
_MAX_EXPOSURE_S: Final = 3600.0
_MAX_FOCAL_MM: Final = 10_000.0
_ALTITUDE_RANGE: Final = (-20_000.0, 100_000.0)

_Base = ExifTags.Base
_GPS = ExifTags.GPS
# (date tag, sub-second tag, offset tags in preference order), best source first.
_TIME_SOURCES: Final = (
    (
        _Base.DateTimeOriginal,
        _Base.SubsecTimeOriginal,
        (_Base.OffsetTimeOriginal, _Base.OffsetTime),
    ),
    (
        _Base.DateTimeDigitized,
        _Base.SubsecTimeDigitized,
        (_Base.OffsetTimeDigitized, _Base.OffsetTime),
    ),
    (_Base.DateTime, _Base.SubsecTime, (_Base.OffsetTime,)),
)


@dataclass(frozen=True, slots=True)
class Location:
    """Where the photo was taken, in decimal degrees (south and west negative) and metres."""

    latitude: float
    longitude: float
    altitude: float | None


@dataclass(frozen=True, slots=True)
class PhotoFacts:
    """What the camera recorded; every field is None when absent or implausible.

    ``taken_at`` is aware: in the recorded offset when ``offset_known``, otherwise the camera's
    wall-clock time labelled UTC (the offset is then unknown, not zero).
    """

    taken_at: datetime.datetime | None = None
    offset_known: bool = False
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    iso: int | None = None
    f_number: float | None = None
    exposure_time: float | None = None
    focal_length: float | None = None
    orientation: int | None = None
    colour_profile: str | None = None
    location: Location | None = None

    def as_json(self, *, with_location: bool) -> dict[str, object]:
        """JSON-safe, None fields left out; the place only when the caller may show it."""
        out: dict[str, object] = {}
        if self.taken_at is not None:
            shown = self.taken_at if self.offset_known else self.taken_at.replace(tzinfo=None)
            out["taken_at"] = shown.isoformat()
            out["offset_known"] = self.offset_known
        for key in _PLAIN_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if with_location and self.location is not None:
            place: dict[str, object] = {
                "latitude": self.location.latitude,
                "longitude": self.location.longitude,
            }
            if self.location.altitude is not None:
                place["altitude"] = self.location.altitude
            out["location"] = place
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> PhotoFacts:
        """Inverse of ``as_json``; unknown keys and wrongly typed values are ignored."""
        taken_at = _parse_iso(data.get("taken_at"))
        offset_known = taken_at is not None and taken_at.tzinfo is not None
        if taken_at is not None and taken_at.tzinfo is None:
            taken_at = taken_at.replace(tzinfo=datetime.UTC)
        return cls(
            taken_at=taken_at,
            offset_known=offset_known,
            camera_make=_json_str(data.get("camera_make")),
            camera_model=_json_str(data.get("camera_model")),
            lens=_json_str(data.get("lens")),
            iso=_json_int(data.get("iso")),
            f_number=_json_float(data.get("f_number")),
            exposure_time=_json_float(data.get("exposure_time")),
            focal_length=_json_float(data.get("focal_length")),
            orientation=_json_int(data.get("orientation")),
            colour_profile=_json_str(data.get("colour_profile")),
            location=_json_location(data.get("location")),
        )


_PLAIN_FIELDS: Final = (
    "camera_make",
    "camera_model",
    "lens",
    "iso",
    "f_number",
    "exposure_time",
    "focal_length",
    "orientation",
    "colour_profile",
)


def _parse_iso(value: object) -> datetime.datetime | None:
    """A stored ``taken_at``; None for anything that is not an ISO 8601 date-time string."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        return None


def _json_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _json_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _json_location(value: object) -> Location | None:
    if not isinstance(value, Mapping):
        return None
    latitude = _json_float(value.get("latitude"))
    longitude = _json_float(value.get("longitude"))
    if latitude is None or longitude is None:
        return None
    return Location(latitude, longitude, _json_float(value.get("altitude")))


# --- reading ---------------------------------------------------------------------------------


def read_facts(data: bytes) -> PhotoFacts:
    """The facts in an image's headers; an empty ``PhotoFacts`` for anything unreadable."""
    try:
        return _read(data)
    except Exception:
        # Metadata is untrusted and Pillow raises a zoo of exceptions on it; facts are optional.
        return PhotoFacts()


def _read(data: bytes) -> PhotoFacts:
    """Open the header with the sniffed format only, as probe() does, and read each part."""
    fmt = probe.sniff(data[: probe.SNIFF_BYTES])
    if fmt is None or fmt not in probe.decodable_formats():
        return PhotoFacts()
    with Image.open(io.BytesIO(data), formats=[fmt]) as im:
        if fmt == "PNG":
            # PngImageFile.getexif() decodes every pixel to reach chunks after IDAT; the base
            # method reads only what open() found, so an eXIf chunk after IDAT is handed over.
            if "exif" not in im.info and (chunk := _png_exif_chunk(data)) is not None:
                im.info["exif"] = chunk
            exif = _safe(lambda: Image.Image.getexif(im))
        else:
            exif = _safe(im.getexif)
        ifd0: Mapping[int, Any] = exif if exif is not None else {}
        exif_ifd = _sub_ifd(exif, ExifTags.IFD.Exif)
        gps_ifd = _sub_ifd(exif, ExifTags.IFD.GPSInfo)
        icc = im.info.get("icc_profile")
    taken_at, offset_known = _taken_at(ifd0, exif_ifd)
    return PhotoFacts(
        taken_at=taken_at,
        offset_known=offset_known,
        camera_make=tag_text(ifd0.get(_Base.Make)),
        camera_model=tag_text(ifd0.get(_Base.Model)),
        lens=tag_text(exif_ifd.get(_Base.LensModel)),
        iso=_iso(exif_ifd.get(_Base.ISOSpeedRatings)),
        f_number=_in_range(_number(exif_ifd.get(_Base.FNumber)), *_F_NUMBER_RANGE),
        exposure_time=_positive_up_to(_number(exif_ifd.get(_Base.ExposureTime)), _MAX_EXPOSURE_S),
        focal_length=_positive_up_to(_number(exif_ifd.get(_Base.FocalLength)), _MAX_FOCAL_MM),
        orientation=_orientation(ifd0.get(_Base.Orientation)),
        colour_profile=_profile_description(icc),
        location=_location(gps_ifd),
    )


def _png_exif_chunk(data: bytes) -> bytes | None:
    """The eXIf chunk's body, found by walking chunk headers (nothing is decompressed)."""
    pos = 8  # after the signature
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            return data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            return None
        pos += 12 + length  # length, type, body, CRC
    return None


def _safe(read: Callable[[], Image.Exif]) -> Image.Exif | None:
    """One metadata read whose failure loses that part only, not the facts found elsewhere."""
    try:
        result = read()
    except Exception:
        return None
    return result if isinstance(result, Image.Exif) else None


def _sub_ifd(exif: Image.Exif | None, tag: int) -> Mapping[int, Any]:
    """A sub-IFD, empty when missing or broken (a bad offset must not cost IFD0's facts)."""
    if exif is None:
        return {}
    try:
        ifd = exif.get_ifd(tag)
    except Exception:
        return {}
    return ifd if isinstance(ifd, Mapping) else {}


# --- text ------------------------------------------------------------------------------------


def tag_text(value: object) -> str | None:
    """An untrusted text tag as bounded plain text (``clean_text``), read as UTF-8.

    Pillow hands ASCII tags over as Latin-1-decoded ``str``; re-encoding gives back the bytes,
    which are then read as UTF-8 (what phones write) with U+FFFD for anything invalid.
    """
    if isinstance(value, str):
        head = value[:_MAX_RAW_TEXT_BYTES]
        try:
            value = head.encode("latin-1")
        except UnicodeEncodeError:
            return clean_text(head)  # already real Unicode: nothing to re-read
    if not isinstance(value, bytes):
        return None
    return clean_text(value[:_MAX_RAW_TEXT_BYTES].decode("utf-8", "replace"))


def clean_text(text: str) -> str | None:
    """Plain text only: controls and other non-text code points dropped, whitespace collapsed,
    at most ``MAX_TEXT_CHARS``; None when nothing is left. Markup is left alone (it is text)."""
    kept = (
        " " if ch.isspace() else ch
        for ch in text[:_MAX_RAW_TEXT_BYTES]
        if ch.isspace() or unicodedata.category(ch) not in _DROPPED_CATEGORIES
    )
    cleaned = " ".join("".join(kept).split())[:MAX_TEXT_CHARS].rstrip()
    return cleaned or None


# --- numbers ---------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """A finite float from an int, float or EXIF rational (x/0 is NaN in Pillow); else None."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        result = float(value)
    except (ArithmeticError, ValueError, TypeError):
        return None
    return result if math.isfinite(result) else None


def _in_range(value: float | None, low: float, high: float) -> float | None:
    return value if value is not None and low <= value <= high else None


def _positive_up_to(value: float | None, high: float) -> float | None:
    return value if value is not None and 0 < value <= high else None


def _iso(value: object) -> int | None:
    """ISOSpeedRatings may hold several values; the first is the sensitivity used."""
    if isinstance(value, tuple) and value:
        value = value[0]
    number = _number(value)
    if number is None or not number.is_integer() or not 1 <= number <= _MAX_ISO:
        return None
    return int(number)


def _orientation(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
        return None
    return value


# --- time ------------------------------------------------------------------------------------


def _taken_at(
    ifd0: Mapping[int, Any], exif_ifd: Mapping[int, Any]
) -> tuple[datetime.datetime | None, bool]:
    """The first plausible capture time, with its own sub-seconds and offset."""
    for date_tag, subsec_tag, offset_tags in _TIME_SOURCES:
        source = ifd0 if date_tag == _Base.DateTime else exif_ifd
        moment = _parse_date(tag_text(source.get(date_tag)))
        if moment is None:
            continue
        moment = moment.replace(microsecond=_microseconds(tag_text(exif_ifd.get(subsec_tag))))
        for offset_tag in offset_tags:
            offset = _parse_offset(tag_text(exif_ifd.get(offset_tag)))
            if offset is not None:
                return moment.replace(tzinfo=offset), True
        return moment.replace(tzinfo=datetime.UTC), False
    return None, False


def _parse_date(text: str | None) -> datetime.datetime | None:
    """'YYYY:MM:DD HH:MM:SS' (dashes and a T tolerated); impossible dates are None."""
    if text is None:
        return None
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        return None
    try:
        return datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def _microseconds(text: str | None) -> int:
    """SubSecTime is the decimal fraction's digits ('054' is 54 ms); anything else is 0."""
    if text is None or not _SUBSEC.fullmatch(text):
        return 0
    return int(text[:6].ljust(6, "0"))


def _parse_offset(text: str | None) -> datetime.timezone | None:
    """'+09:00' or '-05:30'; anything else (blank, 'Z', out of range) is unknown."""
    if text is None:
        return None
    match = _OFFSET.fullmatch(text)
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = datetime.timedelta(hours=int(hours), minutes=int(minutes))
    if int(minutes) >= 60 or delta > _MAX_OFFSET:
        return None
    return datetime.timezone(-delta if sign == "-" else delta)


# --- place and colour ------------------------------------------------------------------------


def _coordinate(
    value: object, ref: object, positive: str, negative: str, limit: float
) -> float | None:
    """Degrees, minutes, seconds and an N/S (E/W) reference to signed decimal degrees."""
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    parts = [_number(part) for part in value]
    if any(part is None or part < 0 for part in parts):
        return None
    degrees, minutes, seconds = (part or 0.0 for part in parts)
    result = degrees + minutes / 60 + seconds / 3600
    direction = tag_text(ref)
    if result > limit or direction not in (positive, negative):
        return None
    return -result if direction == negative else result


def _altitude(gps: Mapping[int, Any]) -> float | None:
    """Metres; GPSAltitudeRef 1 means below sea level, a missing ref means above."""
    altitude = _in_range(_number(gps.get(_GPS.GPSAltitude)), 0.0, _ALTITUDE_RANGE[1])
    ref = gps.get(_GPS.GPSAltitudeRef, 0)
    if isinstance(ref, bytes) and len(ref) == 1:
        ref = ref[0]
    if altitude is None or ref not in (0, 1):
        return None
    if ref == 1:
        altitude = -altitude
    return _in_range(altitude, *_ALTITUDE_RANGE)


def _location(gps: Mapping[int, Any]) -> Location | None:
    latitude = _coordinate(gps.get(_GPS.GPSLatitude), gps.get(_GPS.GPSLatitudeRef), "N", "S", 90)
    longitude = _coordinate(
        gps.get(_GPS.GPSLongitude), gps.get(_GPS.GPSLongitudeRef), "E", "W", 180
    )
    if latitude is None or longitude is None:
        return None
    return Location(latitude, longitude, _altitude(gps))


def _profile_description(icc: object) -> str | None:
    """The embedded ICC profile's description (lcms parses the header and tag table only)."""
    if not isinstance(icc, bytes) or not icc:
        return None
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except Exception:
        return None
    return clean_text(description)
