"""Decide from the bytes alone whether an upload is an acceptable image, before storing it.

Pure (standard library, Pillow, optional pillow_heif): ``inspect()`` runs the checks the headers
answer, ``probe()`` those plus a full decode. Every rejection is a ``ProbeError`` with a stable
``code`` (the caller maps it to an HTTP status). No global state is changed (docs/imaging.md).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, ClassVar, Final

from PIL import ExifTags, Image, ImageFile, features

# Relative: the siblings are as pure as this module, and the purity test allowlists import roots.
from . import formats, growing, jpeg

__all__ = [
    "SNIFF_BYTES",
    "CorruptImage",
    "EmptyFile",
    "ImageHeader",
    "ImageInfo",
    "ImageTooLarge",
    "ProbeError",
    "ProbeLimits",
    "UnsupportedMediaType",
    "check_jpeg_scans",
    "decodable_formats",
    "inspect",
    "probe",
    "sniff",
    "sniff_mime_type",
]

# 128 bytes cover an ISO-BMFF ftyp box with 28 compatible brands; the other magics need 18 at most.
SNIFF_BYTES: Final = 128

# DIB header sizes Pillow's BMP plugin can read; requiring one makes two-byte "BM" magic less loose.
_BMP_HEADER_SIZES: Final = frozenset({12, 40, 52, 56, 64, 108, 124})

_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_HEVC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
)
# Brands naming the codec decide alone; generic HEIF/MIAF brands defer to the compatible list.
_CODED_HEIF_BRANDS: Final = _HEVC_BRANDS | frozenset({b"avci", b"avcs"})
_GENERIC_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1", b"mif2", b"miaf"})

# A meta box holds item properties, a few KB in real files; a far larger one is not worth reading.
_MAX_META_BYTES: Final = 1 << 20
_MAX_TOP_LEVEL_BOXES: Final = 64


def _register_heif() -> bool:
    """Register pillow_heif once, so a missing optional wheel only takes HEIF off the menu."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


_HEIF_DECODABLE: Final = _register_heif()
# Pillow 13 decodes AVIF natively when built with libavif; wheels without it must not claim AVIF.
_AVIF_DECODABLE: Final = bool(features.check("avif"))


def decodable_formats() -> frozenset[str]:
    """Formats this process can decode, so settings can refuse an allowlist it cannot honour."""
    missing = set()
    if not _AVIF_DECODABLE:
        missing.add("AVIF")
    if not _HEIF_DECODABLE:
        missing.add("HEIF")
    return formats.KNOWN_FORMATS - missing


class ProbeError(Exception):
    """Base of every rejection, so the caller maps one stable ``code`` to one HTTP status."""

    code: ClassVar[str] = "invalid-image"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        # Written by us, never a Pillow message: those can carry the server's temp path.
        self.detail = detail


class UnsupportedMediaType(ProbeError):
    """The bytes are not one of the allowed formats, whatever the name or header claimed."""

    code = "unsupported-media-type"


class ImageTooLarge(ProbeError):
    """Decoding would cost more pixels, frames or memory than the limits allow."""

    code = "image-too-large"


class CorruptImage(ProbeError):
    """The bytes start like an allowed format but do not decode completely."""

    code = "corrupt-image"


class EmptyFile(ProbeError):
    """Zero bytes: nothing to sniff, and not worth a format error."""

    code = "empty-file"


@dataclass(frozen=True, slots=True)
class ProbeLimits:
    """Per-call policy, passed in rather than global so tests and tenants can differ safely.

    ``max_total_pixels`` bounds decode work across all frames (sum of frame areas). The default,
    250 MP, is five full-size stills or 1,000 frames of 500x500; at the 150-250 MP/s Pillow decodes
    on the measured 2-core machine that keeps the worst accepted file to one or two CPU seconds.
    ``max_jpeg_scans`` bounds the other multiplier: libjpeg decodes every scan over the whole
    frame, so scans (summed over an MPO's pictures) cost like frames (docs/imaging.md).
    """

    allowed_formats: frozenset[str] = formats.CORE_FORMATS
    max_pixels: int = 50_000_000
    max_frames: int = 1000
    max_total_pixels: int = 250_000_000
    max_jpeg_scans: int = 100

    def __post_init__(self) -> None:
        """Fail at configuration time rather than on the first upload."""
        unknown = self.allowed_formats - formats.KNOWN_FORMATS
        if unknown:
            msg = f"unknown formats {sorted(unknown)}; choose from {sorted(formats.KNOWN_FORMATS)}"
            raise ValueError(msg)
        if min(self.max_pixels, self.max_frames, self.max_total_pixels, self.max_jpeg_scans) < 1:
            msg = "limits must be positive"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What the headers promise, already checked against the limits; no pixel decoded yet.

    ``format`` is Pillow's name (``MPO`` for a multi-picture JPEG); ``width``/``height`` are the
    stored size of the first frame.
    """

    format: str
    mime_type: str
    width: int
    height: int
    frames: int


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the upload service records about an accepted image.

    ``format`` is the name Pillow decoded it as: the sniffed name, except that a multi-picture JPEG
    reports ``MPO`` (its MIME type stays image/jpeg, which is what every browser shows).
    ``width``/``height`` are the stored pixel size of the first frame after decoding; the display
    size has the EXIF/irot ``orientation`` (1..8) applied on top, exactly once.
    """

    format: str
    mime_type: str
    width: int
    height: int
    frames: int
    display_width: int
    display_height: int
    orientation: int


@dataclass(frozen=True, slots=True)
class _Kind:
    format: str
    mime_type: str

    @classmethod
    def of(cls, name: str) -> _Kind:
        """The format's first MIME type in the table (HEIF's two are told apart by brand)."""
        return cls(name, formats.by_name(name).mime_type)


def _ftyp_brands(head: bytes) -> tuple[bytes, list[bytes]] | None:
    """Major and compatible brands of a leading ftyp box: all that AVIF and HEIF sniffing needs."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[:4], "big")
    # Sizes 0 and 1 are legal ISO-BMFF escapes but no real ftyp uses them; refusing keeps it simple.
    if size < 16:
        return None
    end = min(size, len(head))
    # Bytes 12..16 are the minor version, not a brand.
    compatible = [head[i : i + 4] for i in range(16, end - 3, 4)]
    return head[8:12], compatible


def _sniff_isobmff(head: bytes) -> _Kind | None:
    """Tell AVIF from HEIF by brand, since both share the HEIF container and ftyp layout."""
    brands = _ftyp_brands(head)
    if brands is None:
        return None
    major, compatible = brands
    everything = {major, *compatible}
    is_hevc = not everything.isdisjoint(_HEVC_BRANDS)
    heif = _Kind("HEIF", "image/heic" if is_hevc else "image/heif")
    if major in _AVIF_BRANDS:
        return _Kind.of("AVIF")
    if major in _CODED_HEIF_BRANDS:
        return heif
    # A generic major brand (or a video brand) says nothing about the codec: look at the rest.
    # Video files (isom, mp42, qt) never qualify, even if they list an image brand.
    if major not in _GENERIC_HEIF_BRANDS:
        return None
    if not _AVIF_BRANDS.isdisjoint(compatible):
        return _Kind.of("AVIF")
    if not (_CODED_HEIF_BRANDS | _GENERIC_HEIF_BRANDS).isdisjoint(everything):
        return heif
    return None


def _sniff_kind(head: bytes) -> _Kind | None:
    """Magic-number table; one place so sniff() and probe() can never disagree."""
    name: str | None = None
    if head.startswith(b"\xff\xd8\xff"):
        name = "JPEG"
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        name = "PNG"
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        name = "GIF"
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        name = "WEBP"
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        # The last two are BigTIFF; Pillow handles it through the same plugin.
        name = "TIFF"
    elif (
        head[:2] == b"BM"
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    ):
        name = "BMP"
    if name is not None:
        return _Kind.of(name)
    return _sniff_isobmff(head)


def sniff(head: bytes) -> str | None:
    """Name the format from leading bytes only; names and client content types are forgeable."""
    kind = _sniff_kind(head)
    return None if kind is None else kind.format


def sniff_mime_type(head: bytes) -> str | None:
    """The MIME type probe() will report for these leading bytes, known before the rest arrives."""
    kind = _sniff_kind(head)
    return None if kind is None else kind.mime_type


def _child_boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, body_start, body_end) per box in buf[start:end]; stop at the first bad one."""
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(buf[pos : pos + 4], "big")
        box_type = buf[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = int.from_bytes(buf[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield box_type, pos + header, pos + size
        pos += size


def _declared_extents(fp: IO[bytes]) -> list[tuple[int, int]]:
    """Every ``ispe`` (image spatial extent) in the file-level meta box.

    libavif refuses canvases over its own limit with a bare parse error (Pillow then says only
    "cannot identify"), and libheif allocates grids while parsing: reading the declared sizes
    first gives the right code and rejects a bomb before either library sees it. Best effort:
    anything malformed yields fewer extents and the decoder gets the final say.
    """
    fp.seek(0, os.SEEK_END)
    file_end = fp.tell()
    pos = 0
    extents: list[tuple[int, int]] = []
    for _ in range(_MAX_TOP_LEVEL_BOXES):
        if pos + 8 > file_end:
            break
        fp.seek(pos)
        header_bytes = fp.read(16)
        size = int.from_bytes(header_bytes[:4], "big")
        header = 8
        if size == 1:
            size = int.from_bytes(header_bytes[8:16], "big")
            header = 16
        elif size == 0:
            size = file_end - pos
        if size < header:
            break
        if header_bytes[4:8] == b"meta":
            fp.seek(pos + header)
            body = fp.read(min(size - header, _MAX_META_BYTES))
            # meta is a FullBox: 4 bytes of version and flags come before its children.
            for kind, start, end in _child_boxes(body, 4, len(body)):
                if kind != b"iprp":
                    continue
                for kind2, start2, end2 in _child_boxes(body, start, end):
                    if kind2 != b"ipco":
                        continue
                    for kind3, start3, end3 in _child_boxes(body, start2, end2):
                        # ispe is a FullBox too: version/flags, then 32-bit width and height.
                        if kind3 == b"ispe" and end3 - start3 >= 12:
                            width = int.from_bytes(body[start3 + 4 : start3 + 8], "big")
                            height = int.from_bytes(body[start3 + 8 : start3 + 12], "big")
                            extents.append((width, height))
            break
        pos += size
    return extents


def _pixel_cap(limits: ProbeLimits) -> int:
    """Per-frame cap: ours, tightened by Pillow's bomb threshold (warning-as-error, per call)."""
    pillow_cap = Image.MAX_IMAGE_PIXELS
    return limits.max_pixels if pillow_cap is None else min(limits.max_pixels, pillow_cap)


def _check_frame_size(width: int, height: int, cap: int) -> None:
    """Refuse before allocation: a frame's buffer is what a small file can make huge."""
    if width <= 0 or height <= 0:
        raise CorruptImage("image has a zero or negative dimension")
    if width * height > cap:
        raise ImageTooLarge(f"{width}x{height} exceeds the limit of {cap} pixels")


def _orientation(im: Image.Image) -> int:
    """EXIF orientation, read after load() because libtiff applies and drops it for TIFF."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        # Broken metadata must not fail an upload whose pixels decode (and warnings-as-errors
        # configurations make Pillow's "Corrupt EXIF" warning an exception here).
        return 1
    # 0 and out-of-range values occur in the wild and mean "as stored".
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_jpeg_scans(fp: IO[bytes], limit: int) -> None:
    """Refuse a many-scan progressive JPEG from its markers: each scan is a full pass to decode."""
    with jpeg.buffer_of(fp) as data:
        scans = jpeg.count_scans(data, limit)
    if scans > limit:
        raise ImageTooLarge(f"the JPEG data has at least {scans} scans, over the limit of {limit}")


def check_jpeg_scans(fp: IO[bytes], limits: ProbeLimits) -> None:
    """The scan limit alone, for a JPEG (a marker walk, no decoder): cheap enough to run in the
    API process before anything else is done with an upload."""
    fp.seek(0)
    is_jpeg = fp.read(3) == b"\xff\xd8\xff"
    fp.seek(0)
    if is_jpeg:
        _check_jpeg_scans(fp, limits.max_jpeg_scans)


@contextlib.contextmanager
def _opened(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[IO[bytes]]:
    """A path is opened and closed here; a file object (an anonymous temp file) is read from
    its start and left open for the caller, who still needs it."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fp:
            yield fp
    else:
        source.seek(0)
        yield source


@contextlib.contextmanager
def _inspected(
    source: str | os.PathLike[str] | IO[bytes], limits: ProbeLimits, *, count_scans: bool = True
) -> Iterator[tuple[Image.Image, ImageHeader]]:
    """Every check the headers answer, then the opened image; whatever Pillow raises, here or
    in the caller's block, becomes a ``ProbeError``."""
    with _opened(source) as fp:
        head = fp.read(SNIFF_BYTES)
        if not head:
            raise EmptyFile("the file is empty")
        kind = _sniff_kind(head)
        if kind is None:
            raise UnsupportedMediaType("the content is not a recognised image format")
        if kind.format not in limits.allowed_formats:
            raise UnsupportedMediaType(f"{kind.format} images are not accepted")
        if kind.format not in decodable_formats():
            raise UnsupportedMediaType(f"{kind.format} decoding is not available on this server")
        cap = _pixel_cap(limits)
        try:
            if kind.format in ("AVIF", "HEIF"):
                for width, height in _declared_extents(fp):
                    if width * height > cap:
                        raise ImageTooLarge(f"declares {width}x{height}, over {cap} pixels")
            elif kind.format == "JPEG" and count_scans:
                _check_jpeg_scans(fp, limits.max_jpeg_scans)
            fp.seek(0)
            # Only the sniffed format: otherwise Pillow would try FLI, PSD, EPS... on bytes we
            # never vetted. "MPO" must never be listed (Pillow 13 raises KeyError); MPO files
            # open through "JPEG".
            with Image.open(fp, formats=[kind.format]) as im:
                # n_frames comes from the header for most formats; GIF and TIFF scan frame
                # headers (cheap: no pixel data is decoded), bounded by the upload size limit.
                frames = int(getattr(im, "n_frames", 1))
                if frames < 1:
                    raise CorruptImage("image has no frames")
                if frames > limits.max_frames:
                    raise ImageTooLarge(f"{frames} frames exceeds the limit of {limits.max_frames}")
                width, height = im.size
                _check_frame_size(width, height, cap)
                if frames * width * height > limits.max_total_pixels:
                    raise ImageTooLarge(
                        f"{frames} frames of {width}x{height} exceed "
                        f"{limits.max_total_pixels} pixels"
                    )
                fmt = im.format or kind.format
                yield im, ImageHeader(fmt, kind.mime_type, width, height, frames)
        except ProbeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
            raise ImageTooLarge("the image is too large to decode safely") from exc
        except Exception as exc:
            # Pillow and its codecs raise OSError, UnidentifiedImageError, ValueError, EOFError,
            # SyntaxError, KeyError, IndexError, struct.error... on bad input. On untrusted bytes
            # each means "does not decode", never a server fault; the cause stays chained for logs.
            raise CorruptImage(f"the {kind.format} data does not decode") from exc


def _decode(im: Image.Image, header: ImageHeader, limits: ProbeLimits) -> ImageInfo:
    """A full frame-by-frame decode of an inspected image; Pillow's exceptions escape."""
    cap = _pixel_cap(limits)
    width, height, frames = header.width, header.height, header.frames
    # draft(1/8) makes libjpeg entropy-decode every scan (so truncation and corrupt Huffman
    # data still fail) while skipping most IDCT work and 63/64 of the memory. Measured on the
    # corpus and 744 truncated/bit-flipped variants: identical verdicts to a full load.
    # Not for MPO: draft state survives seek() and would mismatch the second picture's tile.
    use_draft = im.format == "JPEG" and frames == 1
    budget = limits.max_total_pixels
    orientation = 1
    for index in range(frames):
        if index:
            im.seek(index)
        # Checked per frame: a GIF frame may extend the canvas far beyond the header's size.
        frame_width, frame_height = im.size
        _check_frame_size(frame_width, frame_height, cap)
        budget -= frame_width * frame_height
        if budget < 0:
            raise ImageTooLarge(f"frames exceed {limits.max_total_pixels} pixels in total")
        if index == 0 and use_draft:
            im.draft(None, (max(1, frame_width // 8), max(1, frame_height // 8)))
        im.load()
        if index == 0:
            if not use_draft:
                # libtiff and libheif may settle the final size only while decoding.
                width, height = im.size
                _check_frame_size(width, height, cap)
            orientation = _orientation(im)
    swapped = orientation >= 5  # 5..8 are the transposes and quarter turns
    return ImageInfo(
        format=header.format,
        mime_type=header.mime_type,
        width=width,
        height=height,
        frames=frames,
        display_width=height if swapped else width,
        display_height=width if swapped else height,
        orientation=orientation,
    )


def inspect(source: str | os.PathLike[str] | IO[bytes], limits: ProbeLimits) -> ImageHeader:
    """The checks that need no decode: format, allowlist, pixels, frames, JPEG scans.

    For a decoder about to trust bytes that ``probe()`` accepted once. Raises the same
    ``ProbeError`` subclasses; a file object (a BytesIO too) is read from its start and left open.
    """
    with _inspected(source, limits) as (_, header):
        return header


def probe_growing(path: str, control: str, limits: ProbeLimits, cpu_seconds: float) -> ImageInfo:
    """``probe()`` of an upload whose bytes are still arriving (``imaging.growing``), so the
    decode keeps pace with the transfer. The JPEG scan count needs every marker: the caller
    checks it with ``check_jpeg_scans()`` once the file is whole; meanwhile the CPU budget
    bounds what a many-scan file can cost."""
    _refuse_truncated_loads()
    too_costly = ImageTooLarge(
        f"decoding took longer than {cpu_seconds:g} s of CPU; the image is too costly"
    )
    raw = growing.GrowingFile(path, control, cpu_seconds, too_costly)
    with io.BufferedReader(raw) as fp, _inspected(fp, limits, count_scans=False) as (im, header):
        return _decode(im, header, limits)


def _refuse_truncated_loads() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Pillow reads it at load() time and it cannot be set per call; fail closed, not open.
        msg = "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated uploads would pass"
        raise RuntimeError(msg)


def probe(source: str | os.PathLike[str] | IO[bytes], limits: ProbeLimits) -> ImageInfo:
    """Validate an upload spooled to disk: ``inspect()``'s checks, then a full decode.

    Raises a ``ProbeError`` subclass for every bad file. ``OSError`` from opening ``path`` itself
    and ``RuntimeError`` for a process with ``ImageFile.LOAD_TRUNCATED_IMAGES`` switched on are
    server faults and propagate.
    """
    _refuse_truncated_loads()
    with _inspected(source, limits) as (im, header):
        return _decode(im, header, limits)
