"""Turn an accepted original into web-sized variants and a BlurHash placeholder.

Pure (standard library, Pillow, pyvips, blurhash), so a worker and a test call the same
``render()``. libvips decodes with shrink-on-load and cuts each preset from the previous one;
Pillow decodes what libvips cannot. Every variant is upright, 8-bit sRGB, without metadata, the
first frame only. At import libvips is locked down to the loaders probe() may accept. Why, and
the measurements behind each choice: docs/imaging.md ("Variants").
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

# libvips reads this once at start-up; block_untrusted_set() below covers an earlier import.
os.environ.setdefault("VIPS_BLOCK_UNTRUSTED", "1")

import blurhash  # type: ignore[import-untyped]  # no py.typed marker in the wheel
import pyvips  # type: ignore[import-untyped]  # ships .pyi files but no py.typed marker
from PIL import ExifTags, Image, ImageCms, ImageOps

from media_api.imaging import formats, similarity
from media_api.imaging.formats import OutputFormat
from media_api.imaging.presets import DEFAULT_PRESETS, Preset
from media_api.imaging.probe import SNIFF_BYTES, sniff

__all__ = [
    "RenderError",
    "RenderResult",
    "Variant",
    "avif_available",
    "cuts",
    "jpeg_shrink",
    "render",
    "webp_effort",
]

WEBP_QUALITY: Final = 80
# libwebp `method` by output size, measured at q80 on this machine (docs/benchmarks.md). Per
# 2048x1536 variant: method 4 takes 220 ms, 2 takes 90 ms for +3.6 % bytes, 0 takes 54 ms for
# +28 % bytes at equal PSNR. Every variant stays within 10 % of what Pillow's default (method
# 4) writes, so method 2 for all but thumbnails, which are fetched most and cost 8 ms at 4.
_WEBP_EFFORT_BY_PIXELS: Final = ((300_000, 4),)
_WEBP_EFFORT_LARGEST: Final = 2
JPEG_QUALITY: Final = 85
# AVIF at effort 0 matches WebP q80's PSNR with 10 % fewer bytes; effort 2 is 7x slower.
AVIF_QUALITY: Final = 60
AVIF_EFFORT: Final = 0
PLACEHOLDER_SIZE: Final = 16

# Formats libvips decodes here; HEIF (HEVC) and BMP always go to Pillow.
_VIPS_FORMATS: Final = frozenset({"JPEG", "PNG", "GIF", "WEBP", "TIFF", "AVIF"})
_VIPS_LOADERS: Final = (
    "VipsForeignLoadJpeg",
    "VipsForeignLoadPng",
    "VipsForeignLoadNsgif",
    "VipsForeignLoadWebp",
    "VipsForeignLoadTiff",
    "VipsForeignLoadHeif",
)
# The same pattern Pillow's getexif() uses, so both engines agree on XMP-only orientation.
_XMP_ORIENTATION: Final = re.compile(rb'tiff:Orientation(="|>)([0-9])')
_RAW_EXIF_FIELD: Final = re.compile(r"png-comment-\d+-Raw profile type exif")
_WHITE: Final = (255, 255, 255)
_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_GRAY_MODES: Final = frozenset({"1", "L", "LA", "La"})


def _configure_vips() -> None:
    """Shrink libvips's attack surface to the loaders probe() can accept, once per process."""
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for loader in _VIPS_LOADERS:
        pyvips.operation_block_set(loader, False)
    pyvips.cache_set_max(0)


_configure_vips()


@dataclass(frozen=True, slots=True)
class Variant:
    """One encoded rendition, with what storage and the HTTP layer need to serve it."""

    name: str
    data: bytes
    width: int
    height: int
    content_type: str
    ext: str


@dataclass(frozen=True, slots=True)
class RenderResult:
    """Variants in preset order, a BlurHash clients can paint before any bytes arrive, and the
    perceptual hashes of the upright picture (near-duplicates)."""

    variants: list[Variant]
    placeholder: str
    fingerprint: similarity.Fingerprint


class RenderError(Exception):
    """Neither engine could decode or encode the original; the worker marks the image failed."""

    code = "render-failed"


@functools.cache
def avif_available() -> bool:
    """AVIF output needs libheif with an AV1 encoder, which a libvips build may lack."""
    try:
        pyvips.Image.black(8, 8, bands=3).heifsave_buffer(
            compression="av1", effort=AVIF_EFFORT, keep="none"
        )
    except pyvips.Error:
        return False
    return True


def webp_effort(pixels: int) -> int:
    """libwebp method for a variant of this many pixels: spend encoder time where views are."""
    for limit, effort in _WEBP_EFFORT_BY_PIXELS:
        if pixels <= limit:
            return effort
    return _WEBP_EFFORT_LARGEST


def render(
    source: bytes | str | os.PathLike[str],
    presets: Sequence[Preset] = DEFAULT_PRESETS,
    fmt: OutputFormat = "webp",
) -> RenderResult:
    """Decode once, resize largest-first, encode every preset and a placeholder."""
    if fmt not in get_args(OutputFormat):
        msg = f"unknown output format {fmt!r}"
        raise ValueError(msg)
    if fmt == "avif" and not avif_available():
        msg = "AVIF output is not available in this libvips build"
        raise ValueError(msg)
    if not presets:
        msg = "at least one preset is needed"
        raise ValueError(msg)
    if len({p.name for p in presets}) != len(presets):
        msg = "preset names must be unique"
        raise ValueError(msg)
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    kind = sniff(data[:SNIFF_BYTES])
    if kind is None:
        raise RenderError("the original is not a recognised image format")
    try:
        _, stage0 = decode_upright(data, kind, presets)
        return _cascade(stage0, presets, fmt)
    except Exception as exc:
        # Decoders raise many types on bad bytes (see probe); all mean "this original is broken".
        raise RenderError(f"could not render the {kind} original") from exc


def decode_upright(data: bytes, kind: str, presets: Sequence[Preset]) -> tuple[str, Any]:
    """The first stage and the engine that made it: libvips where it can, else Pillow."""
    if kind in _VIPS_FORMATS:
        try:
            stage0 = _decode_vips(data, presets)
        except pyvips.Error:
            stage0 = None  # Pillow gets its turn: it decoded this very file in probe()
        if stage0 is not None:
            return "libvips", stage0
    return "pillow", _decode_pillow(data, kind, presets)


def _long_side(width: int, height: int, presets: Sequence[Preset]) -> int:
    """Longer side the first decode must reach so every preset can be cut from it downwards."""
    longest, shortest = max(width, height), min(width, height)
    need = 1
    for p in presets:
        if p.crop:
            # The shorter side must reach the crop size; integer ceil keeps it from rounding under.
            need = max(need, min(longest, -(-p.size * longest // shortest)))
        else:
            need = max(need, min(longest, p.size))
    return need


def _decode_vips(data: bytes, presets: Sequence[Preset]) -> Any | None:
    """Shrink-on-load decode to the largest needed size, upright, 8-bit sRGB, in memory.

    None means "let Pillow do it": CMYK without a profile, which libvips would convert through
    a press profile (grey blacks, dull reds) while browsers and Pillow use the plain formula.
    """
    header = pyvips.Image.new_from_buffer(data, "", fail_on="warning")
    fields: list[str] = header.get_fields()
    has_icc = "icc-profile-data" in fields
    if header.interpretation == "cmyk" and not has_icc:
        return None
    target = _long_side(header.width, header.height, presets)
    # Colour-manage only images that carry a profile: untagged pixels are taken as sRGB, and
    # asking for sRGB output anyway costs a full-resolution transform (12 MP: 70 -> 470 ms).
    managed = {"output_profile": "srgb"} if has_icc else {}
    shrink = 1
    if header.get("vips-loader") == "jpegload_buffer":
        shrink = jpeg_shrink(max(header.width, header.height), target)
    # A square box makes the orientation irrelevant: only the longer side is constrained.
    if shrink > 1:
        loaded = pyvips.Image.new_from_buffer(
            data, "", shrink=shrink, access="sequential", fail_on="warning"
        )
        image = loaded.thumbnail_image(target, height=target, size="down", **managed)
    else:
        image = pyvips.Image.thumbnail_buffer(
            data, target, height=target, size="down", fail_on="warning", **managed
        )
    # Decoding happens here (libvips is lazy), so decode errors reach render()'s fallback; in
    # memory, the image can also be read again (the alpha check) and turned by any angle.
    image = image.copy_memory()
    extra = _orientation_libvips_ignores(header)
    if extra != 1:
        image = image.copy()  # metadata is set on a private copy, never on a shared image
        image.set_type(pyvips.GValue.gint_type, "orientation", extra)
        image = image.autorot().copy_memory()
    return _normalise(image).copy_memory()


def jpeg_shrink(longest: int, target: int) -> int:
    """libjpeg's DCT-domain shrink (1/2, 1/4, 1/8) that still leaves `target` px on the longer side.

    thumbnail_buffer() keeps a factor of two for its own resize, so it would decode a 24 MP JPEG
    at full size for a 2048 px target: loading at 1/2 is 20 ms faster, 53 dB from that output.
    """
    for shrink in (8, 4, 2):
        if longest // shrink >= target:
            return shrink
    return 1


def _orientation_libvips_ignores(header: Any) -> int:
    """Orientation Pillow honours but libvips does not, so both engines rotate the same files."""
    fields: list[str] = header.get_fields()
    if "exif-ifd0-Orientation" in fields:
        return 1  # libvips read the EXIF tag itself and thumbnail() applied it
    if "orientation" in fields and header.get("orientation") != 1:
        return 1  # a TIFF tag, which thumbnail() applied: XMP must not turn it a second time
    value: object = None
    for field in fields:
        if _RAW_EXIF_FIELD.fullmatch(field):
            text = str(header.get(field))
            # ImageMagick's layout, as Pillow parses it: "\nexif\n  <len>\n<hex lines>".
            try:
                exif = Image.Exif()
                exif.load(bytes.fromhex("".join(text.split("\n")[3:])))
                value = exif.get(ExifTags.Base.Orientation)
            except Exception:
                value = None  # unreadable metadata means "as stored", as in probe()
            break
    if value is None and "xmp-data" in fields:
        match = _XMP_ORIENTATION.search(bytes(header.get("xmp-data")))
        value = int(match[2]) if match else None
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _normalise(image: Any) -> Any:
    """Guarantee 8-bit sRGB (plus alpha only where it is not fully opaque) for every encoder."""
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
        if image.format != "uchar":
            image = image.cast("uchar")
    if image.hasalpha() and image[image.bands - 1].min() >= 255:
        image = image.extract_band(0, n=image.bands - 1)
    return image


def _decode_pillow(data: bytes, kind: str, presets: Sequence[Preset]) -> Any:
    """Fallback decode with Pillow's semantics, handed to libvips as 8-bit sRGB pixels."""
    with Image.open(io.BytesIO(data), formats=[kind]) as im:
        width, height = im.size
        target = _long_side(width, height, presets)
        longest = max(width, height)
        if kind == "JPEG":
            # DCT-domain downscale by 1/2..1/8, never below what the largest preset needs.
            im.draft(None, (-(-width * target // longest), -(-height * target // longest)))
        im.load()
        # After load(): libtiff has applied TIFF orientation and dropped the tag by then, while
        # AVIF irot/imir are only exposed as EXIF; exif_transpose() handles both exactly once.
        # Unreadable EXIF (or Pillow's warning made an error) means "as stored", as in probe().
        with contextlib.suppress(Exception):
            ImageOps.exif_transpose(im, in_place=True)
        rgb = _pillow_srgb(im)
    # Box-reduce to at least twice the target so the Lanczos pass below stays cheap and sharp.
    factor = max(rgb.size) // (2 * target)
    if factor >= 2:
        # Premultiplied, so fully transparent pixels do not bleed their colour into the edges.
        if rgb.mode == "RGBA":
            rgb = rgb.convert("RGBa").reduce(factor).convert("RGBA")
        else:
            rgb = rgb.reduce(factor)
    image = pyvips.Image.new_from_memory(
        rgb.tobytes(), rgb.width, rgb.height, len(rgb.getbands()), "uchar"
    ).copy(interpretation="srgb")
    image = image.thumbnail_image(target, height=target, size="down", no_rotate=True)
    return _normalise(image.copy_memory()).copy_memory()


def _pillow_srgb(im: Image.Image) -> Image.Image:
    """8-bit sRGB RGB or RGBA from any Pillow mode, applying the embedded profile if usable."""
    icc = im.info.get("icc_profile")
    if im.mode in _SIXTEEN_BIT_MODES:
        # Scale, not clip: a plain convert() turns most 16-bit gray values white.
        im = im.convert("I").point(lambda v: v / 257).convert("L")
    alpha: Image.Image | None = None
    if "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info:
        alpha = im.convert("RGBA").getchannel("A")
    base = "L" if im.mode in _GRAY_MODES else im.mode if im.mode in ("CMYK", "LAB") else "RGB"
    colour = im if im.mode == base else im.convert(base)
    rgb: Image.Image | None = None
    profile: ImageCms.ImageCmsProfile | None = None
    if base == "LAB":
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
    elif isinstance(icc, bytes) and icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        except (OSError, ImageCms.PyCMSError):
            profile = None  # a broken profile must not fail the variant: treat as sRGB
    if profile is not None:
        try:
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            transform = ImageCms.buildTransform(
                profile, srgb, base, "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC
            )
            rgb = ImageCms.applyTransform(colour, transform)
        except (OSError, ValueError, ImageCms.PyCMSError):
            rgb = None  # profile of the wrong colour space for the pixels: ignore it
    if rgb is None:
        # A copy even when already RGB: the caller's image is closed once this returns.
        rgb = colour.convert("RGB")
    if alpha is not None:
        rgb.putalpha(alpha)
    return rgb


def _cascade(stage0: Any, presets: Sequence[Preset], fmt: OutputFormat) -> RenderResult:
    """Encode every preset, then the placeholder and hashes from the smallest fitted copy."""
    made: dict[str, Variant] = {}
    smallest = stage0
    for preset, image in cuts(stage0, presets):
        made[preset.name] = _encode(preset.name, image, fmt)
        if not preset.crop:
            smallest = image
    return RenderResult(
        variants=[made[p.name] for p in presets],
        placeholder=_placeholder(smallest),
        fingerprint=similarity.fingerprint(smallest),
    )


def cuts(stage0: Any, presets: Sequence[Preset]) -> Iterator[tuple[Preset, Any]]:
    """Each preset's pixels, cut from the smallest intermediate still big enough, largest first."""
    width, height = stage0.width, stage0.height
    order = sorted(presets, key=lambda p: _long_side(width, height, [p]), reverse=True)
    source = stage0
    for preset in order:
        if preset.crop:
            side = min(preset.size, source.width, source.height)
            image = source.thumbnail_image(
                side, height=side, crop="centre", size="down", no_rotate=True
            )
        else:
            if max(source.width, source.height) > preset.size:
                image = source.thumbnail_image(
                    preset.size, height=preset.size, size="down", no_rotate=True
                ).copy_memory()
            else:
                image = source
            source = image
        yield preset, image


def _encode(name: str, image: Any, fmt: OutputFormat) -> Variant:
    """Encode with no metadata kept (keep="none" drops EXIF, XMP, IPTC and ICC alike)."""
    if fmt == "webp":
        data = image.webpsave_buffer(
            Q=WEBP_QUALITY, effort=webp_effort(image.width * image.height), keep="none"
        )
    elif fmt == "jpeg":
        if image.hasalpha():
            image = image.flatten(background=list(_WHITE))
        data = image.jpegsave_buffer(
            Q=JPEG_QUALITY, interlace=True, optimize_coding=True, keep="none"
        )
    else:
        data = image.heifsave_buffer(
            Q=AVIF_QUALITY, compression="av1", effort=AVIF_EFFORT, bitdepth=8, keep="none"
        )
    written = formats.by_name(fmt)
    return Variant(
        name=name,
        data=bytes(data),
        width=int(image.width),
        height=int(image.height),
        content_type=written.mime_type,
        ext=written.ext,
    )


def _placeholder(image: Any) -> str:
    """BlurHash of a 16 px copy (4x3 components need no more; 1.4 ms in pure Python, 32 px: 4.8)."""
    tiny = image.thumbnail_image(
        PLACEHOLDER_SIZE, height=PLACEHOLDER_SIZE, size="down", no_rotate=True
    )
    if tiny.hasalpha():
        tiny = tiny.flatten(background=list(_WHITE))
    raw = bytes(tiny.write_to_memory())
    w, h = int(tiny.width), int(tiny.height)
    rows = [[raw[(y * w + x) * 3 : (y * w + x) * 3 + 3] for x in range(w)] for y in range(h)]
    x_components, y_components = (4, 3) if w >= h else (3, 4)
    return str(blurhash.encode(rows, x_components, y_components))
