"""Upload validation against every row of the shared corpus, plus the limits and sniffing rules."""

from __future__ import annotations

import ast
import hashlib
import io
import shutil
import struct
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from media_api.imaging import probe as probe_module
from media_api.imaging.formats import CORE_FORMATS, KNOWN_FORMATS
from media_api.imaging.probe import (
    SNIFF_BYTES,
    CorruptImage,
    EmptyFile,
    ImageInfo,
    ImageTooLarge,
    ProbeError,
    ProbeLimits,
    UnsupportedMediaType,
    decodable_formats,
    probe,
    sniff,
)
from tests.support.corpus import (
    ACCEPTED,
    CORE_ROWS,
    CORPUS,
    EXTENDED,
    MIME_TYPES,
    ROWS,
    SNIFFED_AS,
    Row,
)
from tests.support.corpus import acceptable_codes as _acceptable_codes
from tests.support.corpus import params as _params


def _all_formats_limits() -> ProbeLimits:
    """Core formats plus every extension format the corpus exercises (HEIF via pillow_heif)."""
    return ProbeLimits(allowed_formats=KNOWN_FORMATS)


def _outcome(path: Path, limits: ProbeLimits) -> ImageInfo | str:
    """An ImageInfo or a rejection code; any other exception fails the calling test."""
    try:
        return probe(path, limits)
    except ProbeError as exc:
        return exc.code


# --------------------------------------------------------------------------- the corpus copy


def test_manifest_lists_every_corpus_file_and_nothing_else() -> None:
    """A file missing from the manifest would silently go untested."""
    on_disk = {
        p.relative_to(CORPUS).as_posix()
        for p in CORPUS.rglob("*")
        if p.is_file() and p.parent != CORPUS
    }
    assert on_disk == {r.file for r in ROWS}
    assert len(ROWS) == 114
    assert {p.name for p in CORPUS.iterdir() if p.is_file()} == {
        "MANIFEST.tsv",
        "README.md",
        "SOURCES.md",
    }


@pytest.mark.parametrize("row", _params(ROWS))
def test_fixture_copy_matches_manifest_bytes(row: Row) -> None:
    """The tests must run on exactly the files the verdicts were written for."""
    data = row.path.read_bytes()
    assert len(data) == row.size
    assert hashlib.sha256(data).hexdigest() == row.sha256


# --------------------------------------------------------------------------- every row


def test_optional_decoders_are_present() -> None:
    """pillow_heif is a project dependency and Pillow 13 has AVIF: no row may be skipped for it."""
    assert decodable_formats() == KNOWN_FORMATS


@pytest.mark.parametrize("row", _params(ACCEPTED))
def test_accepted_rows_match_manifest(row: Row) -> None:
    """Dimensions, frame count and oriented size are exactly what the manifest records."""
    info = probe(row.path, _all_formats_limits())
    assert (
        info.format,
        info.width,
        info.height,
        info.frames,
        info.display_width,
        info.display_height,
    ) == (
        row.format,
        row.width,
        row.height,
        row.frames,
        row.display_width,
        row.display_height,
    )
    assert info.mime_type == MIME_TYPES[row.format]
    assert 1 <= info.orientation <= 8
    # Orientation is applied exactly once: the display box is a transpose iff orientation >= 5.
    if info.orientation >= 5:
        assert (info.display_width, info.display_height) == (info.height, info.width)
    else:
        assert (info.display_width, info.display_height) == (info.width, info.height)


@pytest.mark.parametrize("row", _params([r for r in ROWS if r.verdict == "reject"]))
def test_rejected_rows_raise_manifest_code(row: Row) -> None:
    """Every reject is a ProbeError (never another exception) with the manifest's code."""
    with pytest.raises(ProbeError) as caught:
        probe(row.path, _all_formats_limits())
    assert caught.value.code in _acceptable_codes(row)


@pytest.mark.parametrize("row", _params(EXTENDED))
def test_extension_rows_are_unsupported_under_default_limits(row: Row) -> None:
    """Under the core-only default allowlist, TIFF/BMP/AVIF/HEIF bytes are refused undecoded."""
    assert ProbeLimits().allowed_formats == CORE_FORMATS
    with pytest.raises(UnsupportedMediaType):
        probe(row.path, ProbeLimits())


@pytest.mark.parametrize("row", _params(CORE_ROWS))
def test_core_rows_same_verdict_under_default_limits(row: Row) -> None:
    """Widening the allowlist must not change the answer for a core file."""
    default = _outcome(row.path, ProbeLimits())
    widened = _outcome(row.path, _all_formats_limits())
    assert default == widened
    assert isinstance(default, ImageInfo) == (row.verdict == "accept")


@pytest.mark.parametrize(
    ("file", "orientation", "display"),
    [
        ("orientation/jpeg_landscape_exif0.jpg", 1, (1800, 1200)),
        ("orientation/jpeg_landscape_exif3.jpg", 3, (1800, 1200)),
        ("orientation/jpeg_landscape_exif6.jpg", 6, (1800, 1200)),
        ("orientation/jpeg_portrait_exif8.jpg", 8, (1200, 1800)),
        ("orientation/webp_exif_orientation6.webp", 6, (128, 128)),
        ("orientation/png_exif_chunk_orientation.png", 3, (512, 512)),
        ("orientation/png_xmp_orientation.png", 3, (326, 268)),
        # irot/imir surfaced as EXIF 5 but not applied by Pillow: probe applies it once.
        ("orientation/avif_irot1_imir0.avif", 5, (640, 427)),
        # libtiff already rotated while decoding and dropped the tag: applying 6 again is wrong.
        ("orientation/tiff_g4_orientation6.tif", 1, (590, 88)),
        ("valid/heic_iphone_photo.heic", 1, (2566, 3313)),
    ],
)
def test_orientation_read_after_decode(
    file: str, orientation: int, display: tuple[int, int]
) -> None:
    """The orientation reported is the one still to apply, never one a decoder already applied."""
    info = probe(CORPUS / file, _all_formats_limits())
    assert info.orientation == orientation
    assert (info.display_width, info.display_height) == display


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize("row", _params(ROWS))
def test_sniff_needs_only_sniff_bytes(row: Row) -> None:
    """probe() reads SNIFF_BYTES; a longer head must never change the answer."""
    data = row.path.read_bytes()
    assert sniff(data[:SNIFF_BYTES]) == sniff(data)


@pytest.mark.parametrize("row", _params(ACCEPTED))
def test_sniff_names_accepted_files(row: Row) -> None:
    """Every accepted file is recognised from its magic number alone."""
    head = row.path.read_bytes()[:SNIFF_BYTES]
    assert sniff(head) == SNIFFED_AS.get(row.format, row.format)


@pytest.mark.parametrize("row", _params([r for r in ROWS if r.reason == "unsupported-media-type"]))
def test_sniff_refuses_non_images(row: Row) -> None:
    """Files the manifest calls 415 are not any image format we know, whatever their name."""
    assert sniff(row.path.read_bytes()[:SNIFF_BYTES]) is None


def test_sniff_ignores_file_names(tmp_path: Path) -> None:
    """A PDF named .jpg is refused; a PNG named .jpg is a PNG."""
    with pytest.raises(UnsupportedMediaType):
        probe(CORPUS / "malicious/disguised_pdf.jpg", ProbeLimits())
    renamed = tmp_path / "holiday.jpg"
    shutil.copyfile(CORPUS / "valid/png_rgb8.png", renamed)
    info = probe(renamed, ProbeLimits())
    assert (info.format, info.mime_type) == ("PNG", "image/png")
    pdf_as_png = tmp_path / "scan.png"
    shutil.copyfile(CORPUS / "malicious/disguised_pdf.jpg", pdf_as_png)
    with pytest.raises(UnsupportedMediaType):
        probe(pdf_as_png, _all_formats_limits())


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    """A minimal ftyp box followed by the start of a meta box."""
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x20meta"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(_ftyp(b"avif", b"mif1", b"miaf"), "AVIF", id="avif-major"),
        pytest.param(_ftyp(b"avis", b"msf1", b"avif"), "AVIF", id="avis-major"),
        pytest.param(_ftyp(b"mif1", b"mif1", b"avif"), "AVIF", id="mif1-with-avif"),
        pytest.param(_ftyp(b"msf1", b"iso8", b"avis"), "AVIF", id="msf1-with-avis"),
        pytest.param(_ftyp(b"heic", b"mif1", b"heic"), "HEIF", id="heic-major"),
        pytest.param(_ftyp(b"mif1", b"mif1", b"heic", b"hevc"), "HEIF", id="mif1-with-heic"),
        pytest.param(_ftyp(b"heix", b"mif1"), "HEIF", id="heix-major"),
        pytest.param(_ftyp(b"avci", b"mif1", b"avci"), "HEIF", id="avci-h264-in-heif"),
        pytest.param(_ftyp(b"mif1"), "HEIF", id="mif1-alone"),
        # A video that lists image brands is still a video.
        pytest.param(_ftyp(b"isom", b"avif", b"mif1"), None, id="isom-video"),
        pytest.param(_ftyp(b"mp42", b"isom"), None, id="mp4-video"),
        pytest.param(b"\x00\x00\x00\x08ftypavif" + bytes(8), None, id="ftyp-size-too-small"),
        pytest.param(b"\xff\xd8\xff\xe0", "JPEG", id="jpeg"),
        pytest.param(b"\x89PNG\r\n\x1a\n", "PNG", id="png"),
        pytest.param(b"GIF87a", "GIF", id="gif87a"),
        pytest.param(b"GIF89a", "GIF", id="gif89a"),
        pytest.param(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP", id="webp"),
        pytest.param(b"RIFF\x00\x00\x00\x00WAVEfmt ", None, id="riff-wave"),
        pytest.param(b"II*\x00", "TIFF", id="tiff-le"),
        pytest.param(b"MM\x00*", "TIFF", id="tiff-be"),
        pytest.param(b"II+\x00\x08\x00\x00\x00", "TIFF", id="bigtiff"),
        pytest.param(b"BM" + bytes(12) + struct.pack("<I", 40), "BMP", id="bmp-v3"),
        pytest.param(b"BM" + bytes(12) + b"hell", None, id="bm-then-junk"),
        pytest.param(b"BMP is a format", None, id="bm-text"),
        pytest.param(b"\xff\xd8", None, id="jpeg-too-short"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"%PDF-1.7", None, id="pdf"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'>", None, id="svg"),
    ],
)
def test_sniff_magic_and_brands(head: bytes, expected: str | None) -> None:
    """Magic numbers decide, and ISO-BMFF brands tell AVIF from HEIF."""
    assert sniff(head) == expected


@pytest.mark.parametrize(
    ("file", "mime"),
    [
        ("valid/heic_example.heic", "image/heic"),  # major mif1, compatible heic/hevc
        ("valid/heic_iphone_photo.heic", "image/heic"),
        ("valid/avif_animated_sequence.avifs", "image/avif"),
        ("tricky/jpeg_mpo_stereo.mpo", "image/jpeg"),
    ],
)
def test_mime_type_follows_bytes(file: str, mime: str) -> None:
    """The MIME type stored with the object is derived from the sniffed container."""
    assert probe(CORPUS / file, _all_formats_limits()).mime_type == mime


# --------------------------------------------------------------------------- limits


def test_empty_file_is_empty_file(tmp_path: Path) -> None:
    """Zero bytes gets its own code rather than a format error."""
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(EmptyFile) as caught:
        probe(empty, _all_formats_limits())
    assert caught.value.code == "empty-file"


def test_max_pixels_boundary() -> None:
    """The pixel cap is inclusive and applies to a perfectly valid file."""
    path = CORPUS / "valid/png_rgb8.png"  # 32x32
    assert probe(path, ProbeLimits(max_pixels=32 * 32)).width == 32
    with pytest.raises(ImageTooLarge):
        probe(path, ProbeLimits(max_pixels=32 * 32 - 1))


def test_max_pixels_applies_to_jpeg_before_draft() -> None:
    """The JPEG shrink-on-load path still checks the full stored size."""
    path = CORPUS / "tricky/jpeg_corrupted_camera.jpg"  # 3648x2736
    with pytest.raises(ImageTooLarge):
        probe(path, ProbeLimits(max_pixels=3648 * 2736 - 1))
    assert probe(path, ProbeLimits(max_pixels=3648 * 2736)).width == 3648


def test_max_frames_boundary() -> None:
    """Frame count is limited before any frame is decoded."""
    path = CORPUS / "valid/gif_animated.gif"  # 42 frames
    assert probe(path, ProbeLimits(max_frames=42)).frames == 42
    with pytest.raises(ImageTooLarge):
        probe(path, ProbeLimits(max_frames=41))


def test_max_total_pixels_boundary() -> None:
    """The whole-file pixel budget counts every frame."""
    path = CORPUS / "valid/webp_animated.webp"  # 42 frames of 245x245
    budget = 42 * 245 * 245
    assert probe(path, ProbeLimits(max_total_pixels=budget)).frames == 42
    with pytest.raises(ImageTooLarge):
        probe(path, ProbeLimits(max_total_pixels=budget - 1))


def test_forty_thousand_frames_hit_the_frame_limit() -> None:
    """The Paperclip GIF is a valid file; only the frame limit stops it."""
    path = CORPUS / "malicious/bomb_gif_40k_frames_uber.gif"
    with pytest.raises(ImageTooLarge):
        probe(path, ProbeLimits())
    assert probe(path, ProbeLimits(max_frames=40_000)).frames == 40_000


def _first_image_descriptor(gif: bytes) -> int:
    """Offset of the first 0x2C image descriptor, skipping the colour table and extensions."""
    pos = 13
    if gif[10] & 0x80:
        pos += 3 << ((gif[10] & 7) + 1)
    while gif[pos] == 0x21:
        pos += 2
        while gif[pos]:
            pos += gif[pos] + 1
        pos += 1
    assert gif[pos] == 0x2C
    return pos


def test_gif_frame_growing_the_canvas_is_checked_per_frame(tmp_path: Path) -> None:
    """A 10x10 GIF whose second frame is 100x100: only a per-frame check sees 10,000 pixels."""
    small, big = io.BytesIO(), io.BytesIO()
    Image.new("L", (10, 10)).save(small, "GIF")
    Image.new("L", (100, 100), 255).save(big, "GIF")
    tail = big.getvalue()[_first_image_descriptor(big.getvalue()) :]
    crafted = tmp_path / "grows.gif"
    crafted.write_bytes(small.getvalue()[:-1] + tail)

    info = probe(crafted, ProbeLimits(max_pixels=10_000, max_total_pixels=10_100))
    assert (info.width, info.height, info.frames) == (10, 10, 2)
    with pytest.raises(ImageTooLarge):
        probe(crafted, ProbeLimits(max_pixels=9_999))
    # The header promises 2 x 100 pixels; the budget must count the 100 + 10,000 actually decoded.
    with pytest.raises(ImageTooLarge):
        probe(crafted, ProbeLimits(max_total_pixels=10_099))


def test_pillow_bomb_threshold_is_a_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's warning threshold acts as an error even when our own cap is higher."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32 - 1)
    with warnings.catch_warnings():
        # Pillow itself still warns inside Image.open; that is expected and not under test.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLarge):
            probe(CORPUS / "valid/png_rgb8.png", ProbeLimits(max_pixels=10**9))


def test_declared_avif_extent_is_checked_before_libavif() -> None:
    """The 17000x17000 AVIF is refused from its ispe box, with the size-specific code."""
    path = CORPUS / "malicious/bomb_avif_17000sq.avif"
    with pytest.raises(ImageTooLarge):
        probe(path, _all_formats_limits())
    # A still AVIF's ispe governs too: a limit just under its 128x128 refuses it.
    tight = ProbeLimits(allowed_formats=KNOWN_FORMATS, max_pixels=128 * 128 - 1)
    with pytest.raises(ImageTooLarge):
        probe(CORPUS / "valid/avif_still.avif", tight)


def test_limits_reject_nonsense() -> None:
    """A bad allowlist or limit fails when the settings are built, not on an upload."""
    with pytest.raises(ValueError, match="MPO"):
        ProbeLimits(allowed_formats=frozenset({"JPEG", "MPO"}))
    with pytest.raises(ValueError, match="positive"):
        ProbeLimits(max_frames=0)
    defaults = ProbeLimits()
    assert (defaults.max_pixels, defaults.max_frames) == (50_000_000, 1000)


# --------------------------------------------------------------------------- robustness


def test_error_codes_and_hierarchy() -> None:
    """Codes are stable strings; no HTTP status leaks into the pure module."""
    expected: dict[type[ProbeError], str] = {
        UnsupportedMediaType: "unsupported-media-type",
        ImageTooLarge: "image-too-large",
        CorruptImage: "corrupt-image",
        EmptyFile: "empty-file",
    }
    for cls, code in expected.items():
        err = cls("detail")
        assert isinstance(err, ProbeError)
        assert err.code == code
        assert err.detail == "detail"
        assert not hasattr(err, "status_code")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (lambda: struct.error("unpack"), CorruptImage),
        (lambda: KeyError("MPO"), CorruptImage),
        (lambda: ZeroDivisionError("clap"), CorruptImage),
        (lambda: SyntaxError("not a file"), CorruptImage),
        (lambda: RecursionError("deep"), CorruptImage),
        (lambda: Image.DecompressionBombError("big"), ImageTooLarge),
        (lambda: Image.DecompressionBombWarning("big"), ImageTooLarge),
        (lambda: MemoryError(), ImageTooLarge),
    ],
)
def test_any_decoder_exception_becomes_a_probe_error(
    monkeypatch: pytest.MonkeyPatch,
    raised: Callable[[], BaseException],
    expected: type[ProbeError],
) -> None:
    """Whatever a codec throws on bad bytes, the caller sees a ProbeError with the cause chained."""

    def failing_open(*args: object, **kwargs: object) -> Image.Image:
        raise raised()

    monkeypatch.setattr(Image, "open", failing_open)
    with pytest.raises(expected) as caught:
        probe(CORPUS / "valid/png_rgb8.png", ProbeLimits())
    assert caught.value.__cause__ is not None


def test_truncated_images_setting_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """If something switched LOAD_TRUNCATED_IMAGES on, refuse to validate rather than pass junk."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        probe(CORPUS / "valid/png_rgb8.png", ProbeLimits())


def test_accepts_str_and_pathlike() -> None:
    """The service passes whatever its temp-file API hands back."""
    path = CORPUS / "valid/gif_static.gif"
    assert probe(str(path), ProbeLimits()) == probe(path, ProbeLimits())


def test_concurrent_probes_agree_and_leave_global_state_alone() -> None:
    """Probes run in a thread pool: results match sequential ones and no global setting moves."""
    limits = _all_formats_limits()
    before = (
        list(warnings.filters),
        Image.MAX_IMAGE_PIXELS,
        ImageFile.LOAD_TRUNCATED_IMAGES,
    )
    sequential = [_outcome(r.path, limits) for r in ROWS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda r: _outcome(r.path, limits), ROWS * 2))
    assert parallel == sequential * 2
    after = (list(warnings.filters), Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert after == before


def test_module_imports_no_frameworks() -> None:
    """imaging is pure: only the standard library, Pillow and pillow_heif."""
    source = Path(probe_module.__file__).read_text(encoding="utf-8")
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"__future__", "PIL", "pillow_heif"}
    assert roots
    assert roots <= allowed
