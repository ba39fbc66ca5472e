"""render() on the shared corpus, judged by decoding every variant and looking at its pixels."""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from blurhash import linear_to_srgb, srgb_to_linear  # type: ignore[import-untyped]
from blurhash.blurhash import base83_decode  # type: ignore[import-untyped]
from PIL import ExifTags, Image, ImageChops, ImageCms, ImageOps, ImageStat, PngImagePlugin

from media_api.imaging import similarity, variants
from media_api.imaging.formats import OutputFormat
from media_api.imaging.presets import DEFAULT_PRESETS, Preset
from media_api.imaging.probe import sniff
from media_api.imaging.variants import (
    RenderError,
    RenderResult,
    Variant,
    avif_available,
    render,
    webp_effort,
)
from tests.support.corpus import ACCEPTED, CORPUS, Row, params

BASE83 = re.compile(r"[0-9A-Za-z#$%*+,\-.:;=?@\[\]^_{|}~]+")
# RIFF chunks a WebP needs for pixels; anything else (EXIF, XMP , ICCP) would be metadata.
PIXEL_CHUNKS = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH"}
# Rows libvips cannot or will not decode here, so render() takes Pillow's pixels for them.
PILLOW_ROWS = {
    "valid/avif_animated_sequence.avifs",  # libheif in pyvips-binary rejects the avis brand
    "valid/bmp_rgb24.bmp",  # no BMP loader in libvips
    "valid/heic_example.heic",  # no HEVC decoder in pyvips-binary
    "valid/heic_iphone_photo.heic",
    "valid/jpeg_cmyk_adobe.jpg",  # CMYK without a profile: the plain formula, as browsers do
    "tricky/tiff_cmyk_jpeg_tiled.tif",
    "tricky/jpeg_corrupted_camera.jpg",  # fail_on="warning" refuses its corrupt entropy data
    "tricky/tiff_cielab.tif",  # libvips: "bad labq format"
    "malicious/crash_bmp_rle8_row_overflow.bmp",
}
LANDSCAPE = [f"orientation/jpeg_landscape_exif{n}.jpg" for n in range(9)]
PORTRAIT = [f"orientation/jpeg_portrait_exif{n}.jpg" for n in (0, 5, 6, 7, 8)]
ORIENTED = [r for r in ACCEPTED if r.file.startswith("orientation/")]
ROW = {r.file: r for r in ACCEPTED}


@functools.cache
def rendered(file: str, fmt: OutputFormat = "webp") -> RenderResult:
    """Each corpus file is rendered once per format for the whole module."""
    return render(CORPUS / file, DEFAULT_PRESETS, fmt)


def decode(variant: Variant) -> Image.Image:
    """Decode a variant the way a client would, checking it is what it claims to be."""
    im = Image.open(io.BytesIO(variant.data))
    im.load()
    assert im.size == (variant.width, variant.height)
    return im


def by_name(result: RenderResult) -> dict[str, Variant]:
    return {v.name: v for v in result.variants}


def on_white(im: Image.Image) -> Image.Image:
    """RGB as a viewer on a white page sees it, so alpha and colour compare together."""
    rgba = im.convert("RGBA")
    page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(page, rgba).convert("RGB")


def mad(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel (0..255), b resized to a's size first."""
    first = on_white(a)
    second = on_white(b).resize(first.size, Image.Resampling.LANCZOS)
    return sum(ImageStat.Stat(ImageChops.difference(first, second)).mean) / 3


def mean_rgb(im: Image.Image) -> list[float]:
    return list(ImageStat.Stat(on_white(im)).mean)


def linear_mean(band: Image.Image) -> float:
    """Average of one 8-bit sRGB band in linear light (0..1), the way BlurHash averages."""
    histogram = band.histogram()
    total = sum(n * srgb_to_linear(level) for level, n in enumerate(histogram))
    return float(total / sum(histogram))


def srgb(im: Image.Image) -> Image.Image:
    """Pillow's own sRGB rendering of a decoded original: the reference for colour checks."""
    icc = im.info.get("icc_profile")
    if im.mode.startswith("I;16"):
        im = im.convert("I").point(lambda v: v / 257).convert("L")
    if im.mode in ("P", "LA", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
    if icc and im.mode in ("RGB", "RGBA", "L", "CMYK"):
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(
            im,
            io.BytesIO(icc),
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode=out_mode,
        )
        assert converted is not None
        return converted
    return im if im.mode in ("RGB", "RGBA") else im.convert("RGB")


def reference(file: str) -> Image.Image:
    """Pillow: open, load, exif_transpose exactly once, to sRGB; what a variant must look like."""
    with Image.open(CORPUS / file) as im:
        im.load()
        upright = ImageOps.exif_transpose(im)
    return srgb(upright)


def webp_chunks(data: bytes) -> Iterator[bytes]:
    """Chunk ids of a RIFF/WebP file."""
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        yield data[pos : pos + 4]
        pos += 8 + size + (size & 1)


def expected_fit(row: Row, size: int) -> tuple[int, int]:
    """Longer side fitted to size, never upscaled, aspect from the display size."""
    width, height = row.display_width, row.display_height
    scale = min(1.0, size / max(width, height))
    return round(width * scale), round(height * scale)


# --- every accepted row --------------------------------------------------------------------------


@pytest.mark.parametrize("row", params(ACCEPTED))
def test_every_accepted_row_renders_all_presets(row: Row) -> None:
    result = rendered(row.file)
    assert [v.name for v in result.variants] == ["thumb", "medium", "large"]
    made = by_name(result)
    side = min(256, row.display_width, row.display_height)
    thumb = decode(made["thumb"])
    assert thumb.size == (side, side)
    for preset in DEFAULT_PRESETS[1:]:
        variant = made[preset.name]
        im = decode(variant)
        want_w, want_h = expected_fit(row, preset.size)
        assert max(im.size) == max(want_w, want_h)
        assert abs(im.width - want_w) <= 1
        assert abs(im.height - want_h) <= 1
        # The display aspect, not the stored one: rotated photos come out rotated.
        if row.display_width != row.display_height:
            assert (im.width > im.height) == (row.display_width > row.display_height)
    for variant in result.variants:
        im = decode(variant)
        assert im.format == "WEBP"
        assert im.mode in ("RGB", "RGBA")
        assert (variant.content_type, variant.ext) == ("image/webp", "webp")
        assert set(webp_chunks(variant.data)) <= PIXEL_CHUNKS


@pytest.mark.parametrize("row", params(ACCEPTED))
def test_engine_per_row(row: Row) -> None:
    data = row.path.read_bytes()
    kind = sniff(data[:128])
    assert kind is not None
    engine, _ = variants.decode_upright(data, kind, DEFAULT_PRESETS)
    assert engine == ("pillow" if row.file in PILLOW_ROWS else "libvips")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # tricky/jpeg_bad_exif_ifd.jpg
@pytest.mark.parametrize("row", params([r for r in ACCEPTED if r.file not in PILLOW_ROWS]))
def test_pillow_fallback_matches_libvips(row: Row) -> None:
    """The fallback must serve any row: same sizes and, to encoder noise, the same pixels."""
    data = row.path.read_bytes()
    kind = sniff(data[:128])
    assert kind is not None
    stage0 = variants._decode_pillow(data, kind, DEFAULT_PRESETS)
    fallback = variants._cascade(stage0, DEFAULT_PRESETS, "webp")
    shipped = rendered(row.file)
    for ours, theirs in zip(shipped.variants, fallback.variants, strict=True):
        assert (ours.name, ours.width, ours.height) == (theirs.name, theirs.width, theirs.height)
    # Different decoders (libheif/libavif, lcms paths) and WebP noise: 3.4 at worst here.
    assert mad(decode(shipped.variants[2]), decode(fallback.variants[2])) < 5


# --- orientation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("row", params(ORIENTED))
def test_orientation_matches_exif_transpose(row: Row) -> None:
    """JPEG/WebP EXIF, PNG text-chunk EXIF and XMP, AVIF irot/imir, libtiff: rotated once."""
    ref = reference(row.file)
    assert ref.size == (row.display_width, row.display_height)
    made = by_name(rendered(row.file))
    for name in ("large", "medium"):
        im = decode(made[name])
        assert mad(im, ref) < 6, name
        # A wrong turn of the same picture is far off, so the check above can tell.
        assert mad(im, ref.transpose(Image.Transpose.ROTATE_180)) > 3 * mad(im, ref) + 5


def test_labelled_photos_all_come_out_upright() -> None:
    """Every orientation 1..8 of the labelled photos renders like the untagged original."""
    for group in (LANDSCAPE, PORTRAIT):
        upright = decode(by_name(rendered(group[0]))["large"])
        flipped = upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert mad(upright, flipped) > 20  # the label is asymmetric enough to tell
        for file in group[1:]:
            im = decode(by_name(rendered(file))["large"])
            assert im.size == upright.size, file
            assert mad(im, upright) < 6, file


def test_orientation_6_swaps_width_and_height() -> None:
    file = "orientation/jpeg_landscape_exif6.jpg"
    with Image.open(CORPUS / file) as im:
        assert im.size == (1200, 1800)  # stored portrait
        assert im.getexif()[ExifTags.Base.Orientation] == 6
    made = by_name(rendered(file))
    assert (made["large"].width, made["large"].height) == (1800, 1200)
    assert (made["medium"].width, made["medium"].height) == (1024, 683)


def test_tiff_orientation_applied_by_libtiff_is_not_applied_again() -> None:
    made = by_name(rendered("orientation/tiff_g4_orientation6.tif"))
    assert (made["large"].width, made["large"].height) == (590, 88)


def asymmetric() -> Image.Image:
    """A picture whose every flip and turn looks different: an L of colours on grey."""
    im = Image.new("RGB", (300, 200), (128, 128, 128))
    im.paste((255, 0, 0), (0, 0, 60, 200))
    im.paste((0, 0, 255), (0, 150, 300, 200))
    im.paste((0, 255, 0), (240, 0, 300, 40))
    return im


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("carrier", ["eXIf", "xmp", "jpeg"])
def test_every_orientation_in_every_carrier(carrier: str, orientation: int) -> None:
    """Synthetic files for the carriers the corpus has only one orientation of."""
    im = asymmetric()
    buf = io.BytesIO()
    if carrier == "jpeg":
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        im.save(buf, "JPEG", quality=95, exif=exif)
    elif carrier == "eXIf":
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        im.save(buf, "PNG", exif=exif)
    else:
        xmp = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
            '02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
            f'tiff:Orientation="{orientation}"/></rdf:RDF></x:xmpmeta>'
        )
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp)
        im.save(buf, "PNG", pnginfo=info)
    with Image.open(io.BytesIO(buf.getvalue())) as opened:
        opened.load()
        expected = ImageOps.exif_transpose(opened)
    assert (expected.size == im.size) == (orientation < 5)
    data = buf.getvalue()
    engine, _ = variants.decode_upright(
        data, "JPEG" if carrier == "jpeg" else "PNG", DEFAULT_PRESETS
    )
    assert engine == "libvips"
    got = decode(by_name(render(data, DEFAULT_PRESETS))["large"])
    assert got.size == expected.size
    assert mad(got, expected) < 3


def test_tiff_tag_and_xmp_orientation_turn_once() -> None:
    """Adobe writes tiff:Orientation into XMP too; libvips applies the tag, XMP must not add."""
    im = asymmetric()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><tiff:Orientation>6</tiff:Orientation></x:xmpmeta>'
    buf = io.BytesIO()
    im.save(buf, "TIFF", tiffinfo={ExifTags.Base.Orientation: 6, ExifTags.Base.XMLPacket: xmp})
    data = buf.getvalue()
    engine, _ = variants.decode_upright(data, "TIFF", DEFAULT_PRESETS)
    assert engine == "libvips"
    got = decode(by_name(render(data, DEFAULT_PRESETS))["large"])
    expected = im.transpose(Image.Transpose.ROTATE_270)  # orientation 6: a quarter turn clockwise
    assert got.size == expected.size
    assert mad(got, expected) < 3


# --- colour --------------------------------------------------------------------------------------


@pytest.mark.parametrize("file", ["valid/jpeg_cmyk_adobe.jpg", "tricky/tiff_cmyk_jpeg_tiled.tif"])
def test_cmyk_colours_match_pillow(file: str) -> None:
    with Image.open(CORPUS / file) as im:
        assert im.mode == "CMYK"
        expected = im.convert("RGB")
    got = decode(by_name(rendered(file))["large"])
    assert got.mode == "RGB"
    for ours, theirs in zip(mean_rgb(got), mean_rgb(expected), strict=True):
        assert abs(ours - theirs) < 4
    # Sharp red-on-black edges at 100 px cost a few levels of WebP chroma subsampling; a press
    # profile (what libvips applies to untagged CMYK) would be 30 off, inverted colours 100+.
    assert mad(got, expected) < 10
    assert mad(got, ImageChops.invert(expected)) > 100


@pytest.mark.parametrize(
    "file",
    [
        "tricky/jpeg_xyb_icc.jpg",  # colours are wrong unless the profile is applied
        "valid/png_icc_profile.png",
        "valid/png_16bit_icc_monkey.png",
        "valid/jpeg_camera_canon40d_exif.jpg",
        "tricky/jpeg_icc_512k_multi_app2.jpg",
        "valid/heic_iphone_photo.heic",
    ],
)
def test_icc_profiles_are_converted_to_srgb(file: str) -> None:
    got = decode(by_name(rendered(file))["large"])
    assert "icc_profile" not in got.info
    assert mad(got, reference(file)) < 6  # small files: WebP noise alone reaches 3.7


def test_xyb_without_its_profile_would_look_wrong() -> None:
    """Shows the ICC test above can fail: the raw XYB pixels are far from the sRGB rendering."""
    file = "tricky/jpeg_xyb_icc.jpg"
    with Image.open(CORPUS / file) as im:
        raw = im.convert("RGB")
    got = decode(by_name(rendered(file))["large"])
    assert mad(got, raw) > 20


def test_cielab_tiff_is_converted() -> None:
    file = "tricky/tiff_cielab.tif"
    with Image.open(CORPUS / file) as im:
        assert im.mode == "LAB"
        lab = ImageCms.createProfile("LAB")
        transform = ImageCms.buildTransform(lab, ImageCms.createProfile("sRGB"), "LAB", "RGB")
        expected = ImageCms.applyTransform(im, transform)
    assert expected is not None
    assert mad(decode(by_name(rendered(file))["large"]), expected) < 4


def test_16bit_gray_is_scaled_not_clipped() -> None:
    file = "valid/png_gray16.png"
    with Image.open(CORPUS / file) as im:
        assert im.mode == "I;16"
    got = decode(by_name(rendered(file))["large"]).convert("L")
    stat = ImageStat.Stat(got)
    assert stat.stddev[0] > 20
    assert stat.extrema[0][0] < 50  # dark pixels exist: not blank, not all white
    assert mad(got, reference(file)) < 4


def test_16bit_rgb_with_profile_is_sane_8bit() -> None:
    got = decode(by_name(rendered("valid/png_16bit_icc_monkey.png"))["large"])
    assert got.mode == "RGB"
    assert ImageStat.Stat(got).stddev[0] > 20


# --- alpha ---------------------------------------------------------------------------------------

TRANSPARENT = [
    "valid/png_rgba8.png",
    "valid/png_rgba16.png",
    "valid/png_palette_trns.png",
    "valid/webp_lossy_alpha.webp",
    "valid/avif_alpha.avif",
]


@pytest.mark.parametrize("file", TRANSPARENT)
def test_alpha_is_kept_in_webp(file: str) -> None:
    ref = reference(file)
    assert ref.mode == "RGBA"
    got = decode(by_name(rendered(file))["large"])
    assert got.mode == "RGBA"
    alpha = got.getchannel("A")
    ref_alpha = ref.getchannel("A").resize(got.size, Image.Resampling.LANCZOS)
    assert ImageStat.Stat(alpha).extrema[0][0] < 128  # some real transparency survived
    assert ImageStat.Stat(ImageChops.difference(alpha, ref_alpha)).mean[0] < 4


@pytest.mark.parametrize("file", TRANSPARENT)
def test_jpeg_flattens_alpha_on_white(file: str) -> None:
    ref = reference(file)
    variant = by_name(rendered(file, "jpeg"))["large"]
    got = decode(variant)
    assert got.format == "JPEG"
    assert got.mode == "RGB"
    assert mad(got, ref) < 12  # mad() puts the reference on white too; 32 px files are noisy
    clear = ref.getchannel("A").resize(got.size).point(lambda a: 255 if a == 0 else 0)
    if clear.getbbox() is not None:  # where the source is fully transparent, the JPEG is white
        white = ImageStat.Stat(got.convert("L"), clear).mean[0]
        assert white > 240


def test_opaque_alpha_is_dropped() -> None:
    """An RGBA file whose alpha is all 255 does not need an alpha plane."""
    with Image.open(CORPUS / "valid/png_icc_profile.png") as im:
        assert im.mode == "RGBA"
        assert im.getchannel("A").getextrema() == (255, 255)
    assert all(decode(v).mode == "RGB" for v in rendered("valid/png_icc_profile.png").variants)


# --- metadata ------------------------------------------------------------------------------------

WITH_METADATA = [
    "valid/jpeg_gps_exif_small.jpg",
    "valid/jpeg_camera_canon40d_exif.jpg",
    "malicious/xss_in_all_metadata.jpg",
    "malicious/polyglot_jpeg_php_exif.jpg",
    "malicious/png_imagemagick_cve_2022_44268_profile.png",
    "valid/heic_iphone_photo.heic",
    "orientation/avif_irot_orientation6.avif",
    "orientation/png_xmp_orientation.png",
    "valid/jpeg_progressive_app13.jpg",
]
FORBIDDEN = (b"Exif", b"GPS", b"xpacket", b"x:xmpmeta", b"ICC_PROFILE", b"iCCP", b"Photoshop")


@pytest.mark.parametrize("fmt", ["webp", "jpeg", "avif"])
@pytest.mark.parametrize("file", WITH_METADATA)
def test_metadata_is_stripped(file: str, fmt: OutputFormat) -> None:
    for variant in rendered(file, fmt).variants:
        im = decode(variant)
        assert len(im.getexif()) == 0
        assert not {"exif", "xmp", "icc_profile", "photoshop", "XML:com.adobe.xmp"} & set(im.info)
        for marker in FORBIDDEN:
            assert marker not in variant.data, marker


@pytest.mark.parametrize(
    "file", ["valid/jpeg_gps_exif_small.jpg", "valid/jpeg_camera_canon40d_exif.jpg"]
)
def test_gps_sources_really_carry_gps(file: str) -> None:
    """Keeps the stripping test honest: the inputs have the GPS that must disappear."""
    with Image.open(CORPUS / file) as im:
        assert im.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert b"Exif" in (CORPUS / file).read_bytes()


# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "file", ["valid/jpeg_gps_exif_small.jpg", "valid/bmp_rgb24.bmp", "tricky/gif_no_palette.gif"]
)
def test_small_images_are_never_upscaled(file: str) -> None:
    row = ROW[file]
    for variant in rendered(file).variants:
        assert variant.width <= row.display_width
        assert variant.height <= row.display_height
    side = min(row.display_width, row.display_height)
    thumb = by_name(rendered(file))["thumb"]
    assert (thumb.width, thumb.height) == (side, side)  # largest centred square, not stretched


def striped(width: int, height: int) -> bytes:
    """Red, green and blue vertical thirds, so a crop's position shows in its colours."""
    im = Image.new("RGB", (width, height), (0, 255, 0))
    im.paste((255, 0, 0), (0, 0, width // 3, height))
    im.paste((0, 0, 255), (width - width // 3, 0, width, height))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_thumb_is_a_centred_cover_crop() -> None:
    thumb = decode(by_name(render(striped(900, 400), DEFAULT_PRESETS))["thumb"])
    assert thumb.size == (256, 256)
    # The centred 400x400 square spans x 250..650: red 250..300, green, blue 600..650.
    assert thumb.getpixel((128, 128))[1] > 200  # type: ignore[index]
    assert thumb.getpixel((4, 128))[0] > 200  # type: ignore[index]
    assert thumb.getpixel((251, 128))[2] > 200  # type: ignore[index]


def test_crop_preset_can_dominate_the_first_decode() -> None:
    """A panorama whose square crop needs more pixels than any fitted preset."""
    presets = [Preset("square", 256, True), Preset("small", 512, False)]
    result = render(striped(3000, 300), presets)
    square, small = (decode(v) for v in result.variants)
    assert square.size == (256, 256)
    assert small.size == (512, 51)
    assert square.getpixel((128, 128))[1] > 200  # type: ignore[index]


def test_large_photo_sizes() -> None:
    made = by_name(rendered("tricky/jpeg_ultrahdr_gainmap.jpg"))
    assert [(v.width, v.height) for v in made.values()] == [(256, 256), (1024, 576), (2048, 1152)]


# --- animation, placeholder, formats, errors -----------------------------------------------------


@pytest.mark.parametrize(
    "file", ["valid/gif_animated.gif", "valid/webp_animated.webp", "valid/apng_animated.png"]
)
def test_animated_inputs_give_their_first_frame(file: str) -> None:
    with Image.open(CORPUS / file) as im:
        im.seek(0)
        first = im.convert("RGBA")
        im.seek(getattr(im, "n_frames", 1) // 2)
        middle = im.convert("RGBA")
    got = decode(by_name(rendered(file))["large"])
    # Only part of the picture moves: compare where frame 0 and the middle frame differ.
    box = ImageChops.difference(on_white(first), on_white(middle)).getbbox()
    assert box is not None
    near = mad(got.crop(box), first.crop(box))
    far = mad(got.crop(box), middle.crop(box))
    assert near < 6
    assert far > 1.5 * near


def test_placeholder_is_a_blurhash_of_the_image() -> None:
    landscape = rendered("orientation/jpeg_landscape_exif6.jpg").placeholder
    portrait = rendered("orientation/jpeg_portrait_exif6.jpg").placeholder
    red = rendered("valid/jpeg_cmyk_adobe.jpg").placeholder
    for value in (landscape, portrait, red):
        assert len(value) == 28  # 4x3 components: 1 + 1 + 4 + 2 * 11
        assert BASE83.fullmatch(value)
    assert landscape[0] == "L"  # size flag: 4 across, 3 down
    assert portrait[0] == "T"  # 3 across, 4 down
    assert len({landscape, portrait, red}) == 3
    # Its DC term (characters 2..5) is the image's average colour, taken in linear light.
    for file in ("valid/jpeg_cmyk_adobe.jpg", LANDSCAPE[6], "tricky/jpeg_xyb_icc.jpg"):
        dc = base83_decode(rendered(file).placeholder[2:6])
        hashed = [dc >> 16, (dc >> 8) & 255, dc & 255]
        im = decode(by_name(rendered(file))["large"]).convert("RGB")
        actual = [linear_to_srgb(linear_mean(band)) for band in im.split()]
        assert max(abs(h - a) for h, a in zip(hashed, actual, strict=True)) < 12, file


def test_avif_output() -> None:
    assert avif_available()  # pyvips-binary ships libheif with an AV1 encoder
    for file in ("valid/avif_alpha.avif", "orientation/jpeg_portrait_exif8.jpg"):
        result = rendered(file, "avif")
        for variant in result.variants:
            assert (variant.content_type, variant.ext) == ("image/avif", "avif")
            im = decode(variant)
            assert im.format == "AVIF"
        large = decode(by_name(result)["large"])
        assert mad(large, reference(file)) < 6
    assert decode(by_name(rendered("valid/avif_alpha.avif", "avif"))["large"]).mode == "RGBA"


def test_jpeg_output_is_progressive_rgb() -> None:
    for variant in rendered("orientation/jpeg_landscape_exif3.jpg", "jpeg").variants:
        assert (variant.content_type, variant.ext) == ("image/jpeg", "jpg")
        im = decode(variant)
        assert im.mode == "RGB"
        assert im.info.get("progressive") or im.info.get("progression")


def test_webp_effort_tiers() -> None:
    assert webp_effort(256 * 256) == 4
    assert webp_effort(1024 * 768) == 2
    assert webp_effort(2048 * 1536) == 2


def test_every_variant_is_within_a_tenth_of_pillows_webp_bytes() -> None:
    """The efforts trade time for bytes only up to 10 % over Pillow's defaults (q80, method 4)."""
    file = "orientation/avif_irot_orientation6.avif"  # the corpus's largest real photo
    data = (CORPUS / file).read_bytes()
    _, stage0 = variants.decode_upright(data, "AVIF", DEFAULT_PRESETS)
    made = by_name(rendered(file))
    for preset, image in variants.cuts(stage0, DEFAULT_PRESETS):
        pixels = Image.frombytes("RGB", (image.width, image.height), image.write_to_memory())
        buf = io.BytesIO()
        pixels.save(buf, "WEBP")  # Pillow's defaults: quality 80, method 4
        ours = len(made[preset.name].data)
        assert (made[preset.name].width, made[preset.name].height) == pixels.size
        assert ours <= 1.10 * len(buf.getvalue()), preset.name


@pytest.mark.parametrize(
    ("longest", "shrink"),
    [(2047, 1), (4095, 1), (4096, 2), (6000, 2), (8191, 2), (8192, 4), (16384, 8), (40000, 8)],
)
def test_jpeg_shrink_leaves_the_target(longest: int, shrink: int) -> None:
    assert variants.jpeg_shrink(longest, 2048) == shrink
    assert longest // shrink >= 2048 or shrink == 1


def big_oriented_jpeg(icc: bytes) -> tuple[bytes, Image.Image]:
    """A 4500x3000 JPEG stored turned (orientation 6) with a profile, and how it must look."""
    upright = asymmetric().resize((4500, 3000), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(
        buf, "JPEG", quality=90, exif=exif, icc_profile=icc
    )
    expected = ImageCms.profileToProfile(
        upright,
        io.BytesIO(icc),
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    assert expected is not None
    return buf.getvalue(), expected


def test_large_jpegs_shrink_on_load_upright_and_in_srgb() -> None:
    """24 MP-class JPEGs load at 1/2 scale in libjpeg: still turned once and colour-managed."""
    with Image.open(CORPUS / "tricky/jpeg_xyb_icc.jpg") as im:
        icc = im.info["icc_profile"]
    data, expected = big_oriented_jpeg(icc)
    assert variants.jpeg_shrink(4500, 2048) == 2  # so this file takes the shrink-on-load path
    engine, stage0 = variants.decode_upright(data, "JPEG", DEFAULT_PRESETS)
    assert engine == "libvips"
    assert (stage0.width, stage0.height) == (2048, 1365)  # upright: 4500x3000 scaled by 2048/4500
    large = decode(by_name(render(data, DEFAULT_PRESETS))["large"])
    assert large.size == (2048, 1365)
    assert mad(large, expected) < 3
    assert mad(large, expected.transpose(Image.Transpose.ROTATE_180)) > 20
    # The profile matters for these pixels: unconverted they would be far off.
    with Image.open(io.BytesIO(data)) as stored:
        unconverted = ImageOps.exif_transpose(stored).convert("RGB")
    assert mad(large, unconverted) > 20
    # Within resampling noise of the full-size decode that thumbnail_buffer() would have done.
    full = variants.pyvips.Image.thumbnail_buffer(
        data, 2048, height=2048, size="down", output_profile="srgb"
    )
    assert (full.width, full.height) == (stage0.width, stage0.height)
    assert (full.cast("float") - stage0.cast("float")).abs().avg() < 1


@pytest.mark.parametrize(
    "file",
    [
        "orientation/jpeg_landscape_exif6.jpg",
        "valid/png_rgba8.png",  # alpha: flattened on white before the grey conversion
        "valid/webp_lossy_alpha.webp",
        "valid/png_gray16.png",
    ],
)
def test_fingerprint_is_of_the_medium_copy(file: str) -> None:
    """The hashes are those of the 1024 px upright copy (docs/near-duplicates.md), bit for bit."""
    data = (CORPUS / file).read_bytes()
    kind = sniff(data[:128])
    assert kind is not None
    _, stage0 = variants.decode_upright(data, kind, DEFAULT_PRESETS)
    medium = {p.name: image for p, image in variants.cuts(stage0, DEFAULT_PRESETS)}["medium"]
    assert max(medium.width, medium.height) == min(1024, max(stage0.width, stage0.height))
    assert rendered(file).fingerprint == similarity.fingerprint(medium)


def test_sources_may_be_bytes_or_paths() -> None:
    file = "valid/png_rgb8.png"
    path = CORPUS / file
    results = [render(s, DEFAULT_PRESETS) for s in (path.read_bytes(), str(path), Path(path))]
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize(
    "data", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"\xff\xd8\xff\xe0"]
)
def test_undecodable_bytes_raise_render_error(data: bytes) -> None:
    with pytest.raises(RenderError) as caught:
        render(data, DEFAULT_PRESETS)
    assert caught.value.code == "render-failed"


def test_bad_arguments_are_refused() -> None:
    data = (CORPUS / "valid/png_rgb8.png").read_bytes()
    with pytest.raises(ValueError, match="unique"):
        render(data, [Preset("a", 10, False), Preset("a", 20, True)])
    with pytest.raises(ValueError, match="at least one"):
        render(data, [])
    with pytest.raises(ValueError, match="unknown output format"):
        render(data, DEFAULT_PRESETS, "gif")  # type: ignore[arg-type]
    for name, size in (("th/umb", 10), ("../x", 10), ("", 10), ("ok", 0), ("ok", 10_000)):
        with pytest.raises(ValueError, match="preset"):
            Preset(name, size, False)
