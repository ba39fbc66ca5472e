"""JPEG scan counting (issue 13) and the header-only ``inspect()`` the workers re-check with."""

from __future__ import annotations

import functools
import io
import mmap
import random
import struct
import tempfile
from pathlib import Path

import pytest
from PIL import Image
from PIL.MpoImagePlugin import MpoImageFile

from media_api.imaging.formats import KNOWN_FORMATS
from media_api.imaging.jpeg import buffer_of, count_scans
from media_api.imaging.probe import (
    CorruptImage,
    EmptyFile,
    ImageHeader,
    ImageTooLarge,
    ProbeError,
    ProbeLimits,
    UnsupportedMediaType,
    inspect,
    probe,
)
from tests.support.bombs import many_scan_jpeg
from tests.support.corpus import ACCEPTED, CORPUS, MIME_TYPES, ROWS, Row, acceptable_codes, params
from tests.support.images import jpeg

JPEG_ROWS = [r for r in ROWS if r.path.read_bytes()[:3] == b"\xff\xd8\xff"]
ALL_FORMATS = ProbeLimits(allowed_formats=KNOWN_FORMATS)
RST_CODES = frozenset(range(0xD0, 0xD8))


@functools.cache
def _bomb(scans: int, size: tuple[int, int] = (4000, 4000)) -> bytes:
    """Built once per test session: a 4000x4000 build takes a few tenths of a second."""
    return many_scan_jpeg(scans, size)


def _reference_scans(data: bytes) -> int:
    """A second, plainer count (no regular expressions, no MPF index) of concatenated JPEGs,
    zero padding allowed between them."""
    scans, pos = 0, 0
    try:
        while data.startswith(b"\xff\xd8", pos):
            pos += 2
            while True:
                while data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
                    pos += 1  # junk, stuffing or fill before a marker
                code, pos = data[pos + 1], pos + 2
                if code == 0xD9:
                    break
                if code in RST_CODES or code == 0x01:
                    continue  # no length field
                pos += int.from_bytes(data[pos : pos + 2], "big")
                if code == 0xDA:
                    scans += 1
                    # Entropy-coded data runs to the first 0xFF that starts a non-RST marker.
                    pos = data.index(b"\xff", pos)
                    while data[pos + 1] in RST_CODES | {0x00, 0xFF}:
                        pos = data.index(b"\xff", pos + 1)
            while pos < len(data) and data[pos] == 0:
                pos += 1  # the corpus MPO pads its first picture to an even length
    except (IndexError, ValueError):
        pass  # truncated: what was counted stands
    return scans


def _progressive_save(mode: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 0).save(out, "JPEG", progressive=True)
    return out.getvalue()


def _with_mpf(first: bytes, second: bytes, gap: bytes = b"") -> bytes:
    """An MPO built by hand: ``first`` gets an MPF index (APP2) naming ``second``, which follows
    after ``gap``; Pillow decodes the second picture from the index's offset, wherever it is."""
    table = 8 + 2 + 3 * 12 + 4  # MP entries follow the TIFF header and a 3-entry IFD
    mpf_size = 4 + table + 2 * 16
    first_size = len(first) + 4 + mpf_size
    base = 2 + 4 + 4  # the TIFF header's offset in the file: after SOI, APP2 header and "MPF\0"
    mpf = (
        b"MPF\x00II*\x00"
        + struct.pack("<IH", 8, 3)
        + struct.pack("<HHI4s", 0xB000, 7, 4, b"0100")
        + struct.pack("<HHII", 0xB001, 4, 1, 2)
        + struct.pack("<HHII", 0xB002, 7, 32, table)
        + struct.pack("<I", 0)
        + struct.pack("<IIIHH", 0x030000, first_size, 0, 0, 0)
        + struct.pack("<IIIHH", 0, len(second), first_size + len(gap) - base, 0, 0)
    )
    assert len(mpf) == mpf_size
    app2 = b"\xff\xe2" + struct.pack(">H", 2 + mpf_size) + mpf
    return first[:2] + app2 + first[2:] + gap + second


def _small_jpeg(size: tuple[int, int] = (32, 32)) -> bytes:
    return jpeg(Image.new("RGB", size, (200, 40, 40)), quality=75)


# --------------------------------------------------------------------------- counting real files


@pytest.mark.parametrize("row", params(JPEG_ROWS))
def test_corpus_jpegs_are_far_under_the_limit(row: Row) -> None:
    """Every JPEG of the corpus, good or bad, has the scans a plain walk finds, well under 100."""
    data = row.path.read_bytes()
    scans = count_scans(data, 100)
    assert 1 <= scans <= 12
    assert scans == _reference_scans(data)


@pytest.mark.parametrize("row", params([r for r in ACCEPTED if r.format in ("JPEG", "MPO")]))
def test_sequential_pictures_have_one_scan_each(row: Row) -> None:
    """Pillow's own parse says baseline (not progressive): then every picture is one scan."""
    with Image.open(row.path) as im:
        progressive = "progressive" in im.info or "progression" in im.info
    scans = count_scans(row.path.read_bytes(), 100)
    if progressive:
        assert scans in (10, 11)
    else:
        # The Ultra HDR file carries its gain map as a second JPEG that Pillow does not decode.
        pictures = 2 if "ultrahdr" in row.file else row.frames
        assert scans == pictures


@pytest.mark.parametrize(("mode", "expected"), [("L", 6), ("RGB", 10), ("YCbCr", 10), ("CMYK", 18)])
def test_libjpeg_default_progression(mode: str, expected: int) -> None:
    """jpeg_simple_progression(): 10 scans for YCbCr, 2 + 4 per component otherwise."""
    assert count_scans(_progressive_save(mode), 100) == expected


def test_mpo_pictures_are_summed() -> None:
    """The stereo MPO's pictures, found where Pillow finds them, add up."""
    data = (CORPUS / "tricky/jpeg_mpo_stereo.mpo").read_bytes()
    with Image.open(CORPUS / "tricky/jpeg_mpo_stereo.mpo") as im:
        assert isinstance(im, MpoImageFile)
        im.seek(1)
        second = im.offset
    assert count_scans(data[:second], 100) == 1
    assert count_scans(data[second:], 100) == 1
    assert count_scans(data, 100) == 2


def test_ultra_hdr_gain_map_is_counted() -> None:
    """The gain map is a JPEG of its own after the primary's EOI."""
    data = (CORPUS / "tricky/jpeg_ultrahdr_gainmap.jpg").read_bytes()
    gain_map = data.index(b"\xff\xd9\xff\xd8\xff") + 2
    assert count_scans(data[:gain_map], 100) == count_scans(data[gain_map:], 100) == 1
    assert count_scans(data, 100) == 2


def test_concatenated_progressive_jpegs_are_summed() -> None:
    """A JPEG starting right after an EOI counts too."""
    assert count_scans(_progressive_save("RGB") + _progressive_save("L"), 100) == 16


def test_mpf_picture_behind_junk_is_counted() -> None:
    """A many-scan picture that only the MPF index points to, past junk, is what Pillow decodes."""
    hidden = many_scan_jpeg(300, (64, 64))
    data = _with_mpf(_small_jpeg(), hidden, gap=b"\x00junk" * 100)
    with Image.open(io.BytesIO(data)) as im:
        assert (im.format, getattr(im, "n_frames", 1)) == ("MPO", 2)
        im.seek(1)
        im.load()  # libjpeg decodes every one of the 300 scans
    assert count_scans(data, 1000) == 301
    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(data), ProbeLimits())


def test_junk_between_segments_hides_no_scans() -> None:
    """libjpeg skips junk before a marker and decodes what follows; so does the count."""
    bomb = many_scan_jpeg(300, (64, 64))
    app0_end = 4 + int.from_bytes(bomb[4:6], "big")
    data = bomb[:app0_end] + b"junk\x00\xff\x00more junk" + bomb[app0_end:]
    with Image.open(io.BytesIO(data)) as im:
        im.load()
    assert count_scans(data, 1000) == 300


# --------------------------------------------------------------------------- bounded work


@pytest.mark.parametrize("limit", [0, 1, 9, 10, 100, 999])
def test_stops_as_soon_as_over_the_limit(limit: int) -> None:
    """Over the limit the answer is limit + 1, however many scans follow."""
    assert count_scans(_bomb(1000), limit) == limit + 1


@pytest.mark.parametrize("limit", [1000, 1001, 10**9])
def test_counts_every_scan_within_the_limit(limit: int) -> None:
    """The builder makes exactly the scans asked for, all of them found."""
    assert count_scans(_bomb(1000), limit) == 1000


def test_tiny_segments_count_as_over_the_limit() -> None:
    """Walking a file of 4-byte COM segments would make the walk itself slow: it is refused."""
    picture = _small_jpeg()
    sos = picture.index(b"\xff\xda")
    data = picture[:sos] + b"\xff\xfe\x00\x02" * 60_000 + picture[sos:]
    assert count_scans(data, 100) == 101


def test_overlapping_mpf_pictures_count_as_over_the_limit() -> None:
    """MPF offsets into one long walk would repeat it per picture: 8 scans, yet refused."""
    table = 8 + 2 + 12 + 4  # TIFF header, a one-entry IFD, then the MP entries
    base, chain_at = 2 + 4 + 4, 2 + 4 + 4 + table + 8 * 16
    chain = b"\xff\xd8" * 8  # a SOI at each of these offsets
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    body = chain + sos + bytes(range(1, 255)) * 4000  # ~1 MB of entropy data, no EOI
    offsets = [0] + [at - base for at in range(chain_at, chain_at + 14, 2)]
    entries = b"".join(struct.pack("<IIIHH", 0, 0, offset, 0, 0) for offset in offsets)
    mpf = b"MPF\x00II*\x00" + struct.pack("<IHHHII", 8, 1, 0xB002, 7, len(entries), table)
    mpf += struct.pack("<I", 0) + entries
    data = b"\xff\xd8\xff\xe2" + struct.pack(">H", 2 + len(mpf)) + mpf + body
    assert data.index(chain) == chain_at
    assert count_scans(data, 100) == 101


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff", id="lone-ff"),
        pytest.param(b"\xff\xd8", id="soi-only"),
        pytest.param(b"\xff\xd8\xff", id="soi-ff"),
        pytest.param(b"\xff\xd8\xff\xda", id="sos-without-length"),
        pytest.param(b"\xff\xd8\xff\xda\x00", id="half-a-length"),
        pytest.param(b"\xff\xd8\xff\xe0\x00\x01rest", id="length-below-two"),
        pytest.param(b"\xff\xd8\xff\xe0\xff\xff", id="length-past-the-end"),
        pytest.param(b"\xff\xd8\xff\xda\x00\x02" + b"\xff" * 1000, id="fill-to-the-end"),
        pytest.param(b"\xff\xd8\xff\xe2\x00\x0cMPF\x00MM\x00*\xff\xff", id="mpf-cut-short"),
        pytest.param(b"\x89PNG\r\n\x1a\n", id="not-a-jpeg"),
    ],
)
def test_malformed_structure_never_raises(data: bytes) -> None:
    """Whatever the bytes, a count comes back; the decoder gives the verdict."""
    assert 0 <= count_scans(data, 100) <= 1


def test_truncations_and_bit_flips_never_raise() -> None:
    """Random cuts and flipped bits of real JPEGs (one picture, an MPO, a bomb) stay countable."""
    rng = random.Random(13)
    originals = [
        (CORPUS / "valid/jpeg_progressive_app13.jpg").read_bytes(),
        (CORPUS / "tricky/jpeg_mpo_stereo.mpo").read_bytes(),
        _with_mpf(_small_jpeg(), many_scan_jpeg(200, (64, 64)), gap=b"junk"),
    ]
    for original in originals:
        for _ in range(200):
            data = bytearray(original[: rng.randrange(len(original) + 1)])
            for _ in range(rng.randrange(1, 9) if data else 0):
                # Flips near the start hit the headers and the MPF index as often as the data.
                at = rng.randrange(min(len(data), rng.choice([64, 512, len(data)])))
                data[at] ^= 1 << rng.randrange(8)
            assert 0 <= count_scans(bytes(data), 100) <= 101


def test_marker_soup_never_raises() -> None:
    """Random bytes drawn mostly from marker codes exercise every branch of the walk."""
    rng = random.Random(14)
    alphabet = [0xFF, 0xFF, 0xFF, 0x00, 0xD8, 0xD9, 0xDA, 0xE2, 0x01, 0xD0, 0x02, 0x10]
    for _ in range(300):
        body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(200)))
        assert 0 <= count_scans(b"\xff\xd8\xff" + body, 5) <= 6


# --------------------------------------------------------------------------- probe() and the limit


def test_probe_refuses_a_many_scan_bomb() -> None:
    """The 1,000-scan bomb passes bytes, pixels and frames; the scan count refuses it."""
    with pytest.raises(ImageTooLarge) as caught:
        probe(io.BytesIO(_bomb(1000)), ProbeLimits())
    assert caught.value.code == "image-too-large"
    assert caught.value.detail == "the JPEG data has at least 101 scans, over the limit of 100"


def test_scans_are_refused_before_any_decode() -> None:
    """A truncated bomb would decode to corrupt-image; over the limit it never gets that far."""
    bomb = many_scan_jpeg(1000, (256, 256))
    last_scan = bomb.rindex(b"\xff\xda")
    truncated = bomb[: (last_scan + len(bomb)) // 2]  # the last scan loses its end, and EOI
    assert count_scans(truncated, 10**6) == 1000
    with pytest.raises(CorruptImage):
        probe(io.BytesIO(truncated), ProbeLimits(max_jpeg_scans=1000))
    with pytest.raises(ImageTooLarge, match="over the limit of 999"):
        probe(io.BytesIO(truncated), ProbeLimits(max_jpeg_scans=999))


def test_a_bomb_under_the_limit_still_passes() -> None:
    """90 scans of 4000x4000 is a (strange) valid JPEG within the limit."""
    info = probe(io.BytesIO(_bomb(90)), ProbeLimits())
    assert (info.format, info.width, info.height, info.frames) == ("JPEG", 4000, 4000, 1)


def test_scan_limit_boundary(tmp_path: Path) -> None:
    """The limit is inclusive; a path is counted through mmap like a file object."""
    path = tmp_path / "scans.jpg"
    path.write_bytes(many_scan_jpeg(100, (128, 128)))
    assert probe(path, ProbeLimits(max_jpeg_scans=100)).width == 128
    with pytest.raises(ImageTooLarge, match="at least 100 scans, over the limit of 99"):
        probe(path, ProbeLimits(max_jpeg_scans=99))


def test_scan_limit_must_be_positive() -> None:
    """Like the other limits, a nonsense value fails when the settings are built."""
    assert ProbeLimits().max_jpeg_scans == 100
    with pytest.raises(ValueError, match="positive"):
        ProbeLimits(max_jpeg_scans=0)


# --------------------------------------------------------------------------- inspect()


@pytest.mark.parametrize("row", params(ACCEPTED))
def test_inspect_accepts_valid_files(row: Row) -> None:
    """The header the workers re-check matches the manifest, from a BytesIO."""
    header = inspect(io.BytesIO(row.path.read_bytes()), ALL_FORMATS)
    assert header == ImageHeader(
        format=row.format,
        mime_type=MIME_TYPES[row.format],
        width=row.width,
        height=row.height,
        frames=row.frames,
    )


@pytest.mark.parametrize("row", params(ROWS))
def test_inspect_answers_every_file_with_a_probe_error_or_a_header(row: Row) -> None:
    """Any refusal inspect() makes is one the manifest allows for that file."""
    try:
        outcome: ImageHeader | str = inspect(io.BytesIO(row.path.read_bytes()), ALL_FORMATS)
    except ProbeError as exc:
        outcome = exc.code
    if isinstance(outcome, str):
        assert row.verdict == "reject"
        assert outcome in acceptable_codes(row)


def test_inspect_does_not_decode() -> None:
    """A truncated JPEG has intact headers: only probe()'s decode finds it."""
    data = (CORPUS / "tricky/jpeg_truncated.jpg").read_bytes()
    assert inspect(io.BytesIO(data), ProbeLimits()).format == "JPEG"
    with pytest.raises(CorruptImage):
        probe(io.BytesIO(data), ProbeLimits())


@pytest.mark.parametrize(
    ("file", "limits", "error"),
    [
        ("valid/png_rgb8.png", ProbeLimits(max_pixels=32 * 32 - 1), ImageTooLarge),
        ("valid/gif_animated.gif", ProbeLimits(max_frames=41), ImageTooLarge),
        (
            "valid/webp_animated.webp",
            ProbeLimits(max_total_pixels=42 * 245 * 245 - 1),
            ImageTooLarge,
        ),
        ("malicious/bomb_jpeg_lottapixel_64250sq.jpg", ProbeLimits(), ImageTooLarge),
        ("malicious/bomb_gif_40k_frames_uber.gif", ProbeLimits(), ImageTooLarge),
        ("malicious/bomb_avif_17000sq.avif", ALL_FORMATS, ImageTooLarge),
        (
            "valid/png_rgb8.png",
            ProbeLimits(allowed_formats=frozenset({"JPEG"})),
            UnsupportedMediaType,
        ),
        ("valid/tiff_jpeg_ycbcr.tif", ProbeLimits(), UnsupportedMediaType),
        ("malicious/disguised_pdf.jpg", ALL_FORMATS, UnsupportedMediaType),
    ],
)
def test_inspect_refuses_over_the_limits(
    file: str, limits: ProbeLimits, error: type[ProbeError]
) -> None:
    """Formats, pixels, frames and budgets: the same refusals as probe(), from a BytesIO."""
    with pytest.raises(error):
        inspect(io.BytesIO((CORPUS / file).read_bytes()), limits)


def test_inspect_refuses_scans_empty_and_junk() -> None:
    """The scan limit, an empty buffer and a JPEG magic followed by junk."""
    with pytest.raises(ImageTooLarge, match="over the limit of 100"):
        inspect(io.BytesIO(_bomb(1000)), ProbeLimits())
    with pytest.raises(EmptyFile):
        inspect(io.BytesIO(), ProbeLimits())
    with pytest.raises(CorruptImage):
        inspect(io.BytesIO(b"\xff\xd8\xff" + b"junk" * 10), ProbeLimits())


def test_inspect_leaves_the_bytesio_usable() -> None:
    """The exported buffer is released: the caller can still write to (or resize) its BytesIO."""
    buffer = io.BytesIO(_small_jpeg())
    assert inspect(buffer, ProbeLimits()).width == 32
    buffer.write(b"more")
    buffer.truncate(10)


# --------------------------------------------------------------------------- buffer_of()


def test_buffer_of_maps_a_real_file(tmp_path: Path) -> None:
    """A file on disk is mapped, not read, and its position is left alone."""
    path = tmp_path / "x.jpg"
    path.write_bytes(b"\xff\xd8\xff" + bytes(5000))
    with path.open("rb") as fp:
        fp.seek(7)
        with buffer_of(fp) as data:
            assert isinstance(data, mmap.mmap)
            assert data[:] == path.read_bytes()
        assert fp.tell() == 7


def test_buffer_of_sees_unflushed_writes_and_empty_files() -> None:
    """The spool is written through a buffer; an empty file cannot be mapped."""
    with tempfile.TemporaryFile() as fp:
        with buffer_of(fp) as data:
            assert data == b""
        fp.write(b"abc" * 100)
        with buffer_of(fp) as data:
            assert bytes(data) == b"abc" * 100


def test_buffer_of_shares_a_bytesio_and_reads_anything_else() -> None:
    """BytesIO: its own memory. Another file object: one read, position restored."""
    source = io.BytesIO(b"0123456789")
    with buffer_of(source) as data:
        assert isinstance(data, memoryview)
        assert bytes(data) == b"0123456789"
    wrapped = io.BufferedReader(io.BytesIO(b"0123456789"))
    wrapped.seek(4)
    with buffer_of(wrapped) as data:
        assert data == b"0123456789"
    assert wrapped.tell() == 4
