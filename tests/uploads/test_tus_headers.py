"""The tus header rules of media_api.uploads.tus, without a server: what real clients (tuspy,
tus-js-client) send is accepted and round-trips, every malformed header is refused with its
stable code."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from media_api.uploads.tus import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    MAX_METADATA_BYTES,
    OFFSET_CONTENT_TYPE,
    TUS_CHECKSUM_ALGORITHM,
    TUS_EXTENSION,
    TUS_VERSION,
    Checksum,
    InvalidTusRequest,
    TusError,
    UnsupportedChecksum,
    format_metadata,
    http_date,
    parse_checksum,
    parse_metadata,
    parse_upload_length,
    parse_upload_offset,
    refuse_defer_length,
)

Parse = Callable[[str | None], int]
GALLERY = "0b8e1c7e-2f4a-4c55-9a4e-3f1d2b6a7c80"


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def tuspy_metadata(pairs: dict[str, str]) -> str:
    """What tuspy 1.1.0 sends: `'{} {}'.format(key, b64encode(value))`, joined by commas."""
    return ",".join(f"{key} {b64(value)}" for key, value in pairs.items())


def tus_js_metadata(pairs: dict[str, str]) -> str:
    """What tus-js-client 4.3.1 sends: `${key} ${Base64.encode(String(value))}`, joined."""
    return ",".join(f"{key} {b64(value)}" for key, value in pairs.items())


# --- constants ---------------------------------------------------------------------------


def test_advertised_constants() -> None:
    assert TUS_VERSION == "1.0.0"
    assert TUS_EXTENSION == "creation,creation-with-upload,termination,expiration,checksum"
    assert ",".join(EXTENSIONS) == TUS_EXTENSION
    assert TUS_CHECKSUM_ALGORITHM == "sha1,sha256"
    assert CHECKSUM_ALGORITHMS == {"sha1": 20, "sha256": 32}
    assert OFFSET_CONTENT_TYPE == "application/offset+octet-stream"


def test_errors_carry_stable_codes() -> None:
    assert InvalidTusRequest.code == "invalid-tus-request"
    assert UnsupportedChecksum.code == "unsupported-checksum"
    error = InvalidTusRequest("Upload-Length is required")
    assert isinstance(error, TusError)
    assert error.detail == str(error) == "Upload-Length is required"


# --- Upload-Length and Upload-Offset -----------------------------------------------------


@pytest.mark.parametrize("parse", [parse_upload_length, parse_upload_offset])
@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("1", 1), ("8388608", 8_388_608), ("007", 7), ("9" * 18, 10**18 - 1)],
)
def test_decimal_headers_accept_digits(parse: Parse, value: str, expected: int) -> None:
    assert parse(value) == expected


@pytest.mark.parametrize("parse", [parse_upload_length, parse_upload_offset])
@pytest.mark.parametrize(
    "value",
    [
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1 2",
        "1.0",
        "1e3",
        "0x10",
        "1_000",
        "\u0661\u0662",  # Arabic-Indic digits: int() would take them
        "\uff11",  # fullwidth digit one
        "1" * 19,
        "abc",
    ],
)
def test_decimal_headers_refuse_anything_else(parse: Parse, value: str) -> None:
    with pytest.raises(InvalidTusRequest) as caught:
        parse(value)
    assert caught.value.code == "invalid-tus-request"


def test_missing_length_and_offset_are_refused_by_name() -> None:
    with pytest.raises(InvalidTusRequest, match="Upload-Length is required"):
        parse_upload_length(None)
    with pytest.raises(InvalidTusRequest, match="Upload-Offset is required"):
        parse_upload_offset(None)


def test_invalid_offset_names_the_header() -> None:
    with pytest.raises(InvalidTusRequest, match="Upload-Offset"):
        parse_upload_offset("-5")


@pytest.mark.parametrize("value", ["1", "0", "", "anything"])
def test_defer_length_is_refused_whatever_its_value(value: str) -> None:
    with pytest.raises(InvalidTusRequest, match="Upload-Defer-Length"):
        refuse_defer_length(value)


def test_no_defer_length_passes() -> None:
    refuse_defer_length(None)


# --- Upload-Metadata: accepted -----------------------------------------------------------


@pytest.mark.parametrize("client", [tuspy_metadata, tus_js_metadata])
def test_metadata_from_real_clients_round_trips(client: Callable[[dict[str, str]], str]) -> None:
    sent = {"filename": "test.jpg", "title": "", "gallery_id": GALLERY, "note": "été ☀ 日本"}
    header = client(sent)
    assert header.startswith("filename dGVzdC5qcGc=,title ,gallery_id ")
    parsed = parse_metadata(header)
    assert parsed == sent
    assert list(parsed) == list(sent)  # order kept
    assert format_metadata(parsed) == header


def test_metadata_literal_header() -> None:
    header = f"filename dGVzdC5qcGc=,title ,gallery_id {b64(GALLERY)}"
    assert parse_metadata(header) == {"filename": "test.jpg", "title": "", "gallery_id": GALLERY}


def test_metadata_key_without_value_is_none() -> None:
    parsed = parse_metadata("is_confidential,filename dGVzdC5qcGc=")
    assert parsed == {"is_confidential": None, "filename": "test.jpg"}
    assert format_metadata(parsed) == "is_confidential,filename dGVzdC5qcGc="


def test_metadata_single_key_without_value() -> None:
    assert parse_metadata("flag") == {"flag": None}


@pytest.mark.parametrize("header", ["", "   "])
def test_empty_metadata_header_has_no_pairs(header: str) -> None:
    assert parse_metadata(header) == {}


def test_metadata_tolerates_spaces_after_commas_and_around_values() -> None:
    header = "filename dGVzdC5qcGc=,  title  YQ== ,\tother Yg=="
    assert parse_metadata(header) == {"filename": "test.jpg", "title": "a", "other": "b"}


def test_metadata_keys_may_use_any_printable_ascii_but_space_and_comma() -> None:
    key = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != ",")
    assert parse_metadata(f"{key} YQ==") == {key: "a"}


def test_metadata_values_are_any_utf8_text() -> None:
    value = "line\nbreak\x00nul 🙂"  # cleaning and checking is the service's job
    assert parse_metadata(f"v {b64(value)}") == {"v": value}


def test_metadata_of_exactly_the_limit_is_accepted() -> None:
    prefix = "k "
    value_len = (MAX_METADATA_BYTES - len(prefix)) // 4 * 3
    header = prefix + b64("x" * value_len)
    header += "," + "y" * (MAX_METADATA_BYTES - len(header) - 1)
    assert len(header) == MAX_METADATA_BYTES
    assert parse_metadata(header)["k"] == "x" * value_len


# --- Upload-Metadata: refused ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (",filename dGVzdC5qcGc=", "empty key"),
        ("filename dGVzdC5qcGc=,", "empty key"),
        ("a YQ==,,b Yg==", "empty key"),
        ("ké YQ==", "printable ASCII"),
        ("k\x01 YQ==", "printable ASCII"),
        ("k\x7f YQ==", "printable ASCII"),
        ("k\tv YQ==", "printable ASCII"),
        ("a YQ==,a Yg==", "twice"),
        ("a,a", "twice"),
        ("a YQ==,a", "twice"),
        ("k YQ", "not base64"),  # padding missing
        ("k YQ=", "not base64"),
        ("k Y Q==", "not base64"),
        ("k YQ==YQ==", "not base64"),
        ("k dGVz dA==", "not base64"),
        ("k dGVzdA==!", "not base64"),
        ("k dGVzdA-_", "not base64"),  # URL-safe alphabet
        ("k é", "not base64"),
        ("k " + b64(b"\xff\xfe"), "not UTF-8"),
        ("k " + b64(b"\xed\xa0\x80"), "not UTF-8"),  # an encoded surrogate
        ("k " + b64(b"caf\xe9"), "not UTF-8"),  # Latin-1
    ],
)
def test_malformed_metadata_is_refused(header: str, reason: str) -> None:
    with pytest.raises(InvalidTusRequest, match=reason) as caught:
        parse_metadata(header)
    assert caught.value.code == "invalid-tus-request"


def test_key_with_a_comma_cannot_exist_it_splits_into_an_empty_key() -> None:
    with pytest.raises(InvalidTusRequest, match="empty key"):
        parse_metadata("a,,b YQ==")


def test_metadata_over_4_kib_is_refused() -> None:
    header = "k " + b64("x" * 3100)
    assert len(header) > MAX_METADATA_BYTES
    with pytest.raises(InvalidTusRequest, match="4096 bytes"):
        parse_metadata(header)
    with pytest.raises(InvalidTusRequest, match="4096 bytes"):
        parse_metadata("a" * (MAX_METADATA_BYTES + 1))


# --- Upload-Checksum ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksum_accepted_and_checked(algorithm: str) -> None:
    body = b"chunk of an image"
    digest = hashlib.new(algorithm, body).digest()
    checksum = parse_checksum(f"{algorithm} {b64(digest)}")
    assert checksum == Checksum(algorithm, digest)
    hasher = checksum.hasher()
    hasher.update(body[:5])
    hasher.update(body[5:])
    assert checksum.matches(hasher)
    other = checksum.hasher()  # a fresh object each time
    other.update(body + b"!")
    assert not checksum.matches(other)


def test_checksum_tuspy_sends() -> None:
    """tuspy: `'{} {}'.format('sha1', b64encode(hashlib.sha1(chunk).digest()))`."""
    chunk = b"\x89PNG\r\n\x1a\n" * 100
    header = "sha1 " + base64.b64encode(hashlib.sha1(chunk).digest()).decode("ascii")  # noqa: S324
    checksum = parse_checksum(header)
    hasher = checksum.hasher()
    hasher.update(chunk)
    assert checksum.algorithm == "sha1"
    assert checksum.matches(hasher)


def test_checksum_of_the_empty_body() -> None:
    checksum = parse_checksum("sha256 " + b64(hashlib.sha256(b"").digest()))
    assert checksum.matches(checksum.hasher())


SHA1 = b64(hashlib.sha1(b"x").digest())  # noqa: S324
SHA256 = b64(hashlib.sha256(b"x").digest())


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("md5 " + b64(hashlib.md5(b"x").digest()), "one of sha1,sha256"),  # noqa: S324
        ("crc32 AAAAAA==", "one of sha1,sha256"),
        ("SHA1 " + SHA1, "one of sha1,sha256"),  # algorithm names are lower case
        ("sha512 " + b64(hashlib.sha512(b"x").digest()), "one of sha1,sha256"),
        ("sha1", "<algorithm> <base64 digest>"),
        ("", "<algorithm> <base64 digest>"),
        (SHA1, "<algorithm> <base64 digest>"),
        ("sha1 ", "<algorithm> <base64 digest>"),
        ("sha1 " + SHA256, "20 bytes"),
        ("sha256 " + SHA1, "32 bytes"),
        ("sha1 " + SHA1[:-1], "not base64"),
        ("sha1 " + SHA1 + "AAAA", "not base64"),  # data after the padding
        ("sha1 " + b64(bytes(21)), "20 bytes"),
        ("sha256 " + b64(bytes(31)), "32 bytes"),
        ("sha1  " + SHA1, "not base64"),
        ("sha1 " + SHA1.replace("+", "-").replace("/", "_") + "*", "not base64"),
        ("sha256 " + hashlib.sha256(b"x").hexdigest(), "not base64|32 bytes"),
    ],
)
def test_malformed_checksum_is_refused(header: str, reason: str) -> None:
    with pytest.raises(UnsupportedChecksum, match=reason) as caught:
        parse_checksum(header)
    assert caught.value.code == "unsupported-checksum"


# --- Upload-Expires ----------------------------------------------------------------------


def test_http_date_format() -> None:
    assert http_date(datetime(2026, 11, 25, 12, 0, tzinfo=UTC)) == "Wed, 25 Nov 2026 12:00:00 GMT"


def test_http_date_converts_to_gmt_and_drops_microseconds() -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2026, 11, 25, 13, 0, 0, 999_999, tzinfo=paris)
    assert http_date(moment) == "Wed, 25 Nov 2026 12:00:00 GMT"
    assert http_date(datetime(2027, 1, 3, 0, 0, 5, tzinfo=UTC)) == "Sun, 03 Jan 2027 00:00:05 GMT"


def test_http_date_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        http_date(datetime(2026, 11, 25, 12, 0))
