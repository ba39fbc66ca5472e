"""Decoding a file while another thread still writes it: the verdicts of a whole-file probe."""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from media_api.imaging import growing
from media_api.imaging.probe import (
    CorruptImage,
    ImageInfo,
    ImageTooLarge,
    ProbeError,
    ProbeLimits,
    probe,
    probe_growing,
)
from tests.support.corpus import CORPUS
from tests.support.images import noise_jpeg

LIMITS = ProbeLimits(
    max_pixels=50_000_000,
    max_frames=1000,
    max_jpeg_scans=100,
    allowed_formats=frozenset({"JPEG", "PNG", "GIF", "WEBP", "TIFF", "AVIF", "HEIF"}),
)


@contextmanager
def written_slowly(
    data: bytes,
    *,
    chunk: int = 64 * 1024,
    pause: float = 0.002,
    finish: bool = True,
    log: list[int] | None = None,
) -> Iterator[tuple[str, str]]:
    """A file and a control pipe, as /proc paths, filled by a thread a chunk at a time."""
    with tempfile.TemporaryFile() as spool:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)

        def write() -> None:
            for start in range(0, len(data), chunk):
                spool.write(data[start : start + chunk])
                spool.flush()
                growing.progressed(write_fd)
                if log is not None:
                    log.append(start + chunk)
                time.sleep(pause)
            if finish:
                growing.finished(write_fd, len(data))
            else:
                os.close(write_fd)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            pid = os.getpid()
            yield f"/proc/{pid}/fd/{spool.fileno()}", f"/proc/{pid}/fd/{read_fd}"
        finally:
            writer.join()
            os.close(read_fd)
            if finish:
                os.close(write_fd)


def _verdict(call: object) -> ImageInfo | str:
    try:
        return call()  # type: ignore[operator, no-any-return]
    except ProbeError as exc:
        return exc.code


FILES = [
    "valid/jpeg_camera_canon40d_exif.jpg",
    "valid/jpeg_progressive_app13.jpg",
    "valid/png_interlaced_adam7.png",
    "valid/gif_animated.gif",
    "valid/webp_lossy.webp",
    "orientation/jpeg_landscape_exif6.jpg",
    "tricky/jpeg_truncated.jpg",
    "tricky/png_truncated.png",
    "tricky/png_bad_idat_crc.png",
    "tricky/jpeg_mpo_stereo.mpo",
    # Formats whose readers seek to the end or read the whole file first.
    "tricky/tiff_multipage.tiff",
    "valid/tiff_jpeg_ycbcr.tif",
    "valid/avif_example.avif",
    "valid/heic_example.heic",
    "malicious/bomb_avif_17000sq.avif",
]


@pytest.mark.parametrize("name", FILES)
def test_a_followed_decode_gives_the_whole_files_verdict(name: str) -> None:
    data = (CORPUS / name).read_bytes()
    whole = _verdict(lambda: probe(io.BytesIO(data), LIMITS))
    with written_slowly(data, chunk=max(1, len(data) // 7)) as (path, control):
        followed = _verdict(lambda: probe_growing(path, control, LIMITS, cpu_seconds=10))
    assert followed == whole


def test_the_decode_keeps_pace_with_the_bytes() -> None:
    """Before the writer says it is done, the decoder has already read nearly every byte."""
    data = noise_jpeg(3000, 2000)
    read_before_the_end: list[int] = []
    with tempfile.TemporaryFile() as spool:
        read_fd, write_fd = os.pipe()
        pid = os.getpid()
        reader = growing.GrowingFile(
            f"/proc/{pid}/fd/{spool.fileno()}", f"/proc/{pid}/fd/{read_fd}", 10, RuntimeError()
        )

        def write() -> None:
            chunk = len(data) // 40
            for start in range(0, len(data), chunk):
                spool.write(data[start : start + chunk])
                spool.flush()
                growing.progressed(write_fd)
                time.sleep(0.01)
            deadline = time.monotonic() + 10
            while reader.tell() < len(data) * 0.9 and time.monotonic() < deadline:
                time.sleep(0.01)
            read_before_the_end.append(reader.tell())
            growing.finished(write_fd, len(data))

        writer = threading.Thread(target=write)
        writer.start()
        with io.BufferedReader(reader) as fp, Image.open(fp, formats=["JPEG"]) as im:
            im.load()
            assert im.size == (3000, 2000)
        writer.join()
        os.close(read_fd)
        os.close(write_fd)
    assert read_before_the_end[0] >= len(data) * 0.9


def test_an_abandoned_upload_ends_the_decode() -> None:
    data = (CORPUS / "valid/jpeg_camera_canon40d_exif.jpg").read_bytes()
    with (
        written_slowly(data[: len(data) // 2], finish=False) as (path, control),
        pytest.raises(CorruptImage),
    ):
        probe_growing(path, control, LIMITS, cpu_seconds=10)


def test_the_cpu_budget_stops_a_costly_decode_before_the_end() -> None:
    data = noise_jpeg(4000, 3000)
    progress: list[int] = []
    with written_slowly(data, chunk=len(data) // 100, pause=0.01, log=progress) as (path, control):
        with pytest.raises(ImageTooLarge, match="CPU"):
            probe_growing(path, control, LIMITS, cpu_seconds=0.05)
        stopped_at = progress[-1]
    assert stopped_at < len(data)  # refused while bytes were still arriving


def test_seeking_to_the_end_waits_for_the_final_length(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    with written_slowly(data, chunk=1000) as (path, control):
        file = growing.GrowingFile(path, control, 10, RuntimeError("budget"))
        with io.BufferedReader(file) as fp:
            assert fp.seek(0, os.SEEK_END) == len(data)
            fp.seek(0)
            assert fp.read() == data
