"""Count a JPEG's scans from its markers alone, so a many-scan decode bomb is refused undecoded.

Standard library only. Why and how: docs/imaging.md, "JPEG scans".
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import re
from collections.abc import Iterator
from typing import IO, Final, Literal, TypeAlias

__all__ = ["Buffer", "buffer_of", "count_scans"]

Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

# Outside entropy-coded data a marker is 0xFF then any code but 0x00 (stuffing) or 0xFF (fill):
# matching the pair finds the last 0xFF of a fill run, and non-0xFF junk is skipped as libjpeg does.
_MARKER: Final = re.compile(rb"\xff[^\x00\xff]")
# Inside it RST0-7 belong to the data. Pairs, not runs: a run would make a search quadratic.
_SCAN_END: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

_SOI: Final = 0xD8
_EOI: Final = 0xD9
_SOS: Final = 0xDA
_APP2: Final = 0xE2
_MP_ENTRIES: Final = 0xB002
# Markers without a length field: TEM, RST0-7 and a (duplicate) SOI.
_STANDALONE: Final = frozenset({0x01, _SOI, *range(0xD0, 0xD8)})
# Real files have dozens of markers (a few thousand for huge XMP or many MPO pictures); walking
# one costs ~0.4 us, so this bounds a file of tiny segments to ~20 ms.
_MAX_MARKERS: Final = 50_000


def _mpf_offsets(data: Buffer, start: int, end: int) -> list[int]:
    """Where an MPF APP2 segment (CIPA DC-007) says the other pictures start; Pillow seeks there."""
    if bytes(data[start : start + 4]) != b"MPF\x00":
        return []
    base = start + 4  # offsets count from the TIFF header that follows
    order = bytes(data[base : base + 2])
    if order not in (b"II", b"MM"):
        return []
    endian: Literal["little", "big"] = "little" if order == b"II" else "big"

    def number(at: int, size: int) -> int:
        """An unsigned field, or -1 past the segment's end."""
        return int.from_bytes(data[at : at + size], endian) if at + size <= end else -1

    ifd = number(base + 4, 4)
    if ifd < 0:
        return []
    ifd += base
    offsets: list[int] = []
    for index in range(max(0, number(ifd, 2))):
        entry = ifd + 2 + 12 * index
        if entry + 12 > end:
            break
        if number(entry, 2) == _MP_ENTRIES:
            table, length = base + number(entry + 8, 4), number(entry + 4, 4)
            # 16 bytes per picture; the first entry is this picture, which Pillow reads at 0.
            for pos in range(table + 16, min(end, table + length) - 15, 16):
                offsets.append(base + number(pos + 8, 4))
    return offsets


def _walk(
    data: Buffer, start: int, limit: int, markers: int, pictures: list[int]
) -> tuple[int, int, int]:
    """Scans of the picture at ``start`` (stopping once over ``limit``), the offset after its EOI
    (-1 if it has none) and how many of ``markers`` are left; MPF offsets go to ``pictures``."""
    size = len(data)
    pos = start + 2
    scans = 0
    pattern = _MARKER
    while scans <= limit and markers > 0:
        markers -= 1
        found = pattern.search(data, pos)
        if found is None:
            break
        pos = found.end()
        code = data[pos - 1]
        pattern = _MARKER
        if code == _EOI:
            return scans, pos, markers
        if code in _STANDALONE:
            continue
        if pos + 2 > size:
            break
        length = data[pos] << 8 | data[pos + 1]
        if length < 2:
            break  # libjpeg gives up here too
        if code == _SOS:
            scans += 1
            pattern = _SCAN_END  # the entropy-coded data follows the header
        elif code == _APP2:
            pictures.extend(_mpf_offsets(data, pos + 2, min(size, pos + length)))
        pos += length
    return scans, -1, markers


def count_scans(data: Buffer, limit: int) -> int:
    """Scans (SOS segments) in all the pictures of a JPEG, MPO or Ultra HDR file, up to limit + 1.

    Walks the picture at 0, a JPEG starting right after any EOI and every MPF picture offset.
    Malformed structure ends the count: the decoder gives the verdict. A walk that would cost
    more than a real file's (over _MAX_MARKERS markers, or pictures overlapping so much that
    more than twice the file is walked) counts as over the limit.
    """
    budget = 2 * len(data)
    markers = _MAX_MARKERS
    pictures = [0]
    seen: set[int] = set()
    scans = 0
    while pictures:
        start = pictures.pop()
        if start in seen or start < 0 or bytes(data[start : start + 3]) != b"\xff\xd8\xff":
            continue
        seen.add(start)
        if budget <= 0 or markers <= 0:
            return limit + 1
        found, end, markers = _walk(data, start, limit - scans, markers, pictures)
        scans += found
        if scans > limit:
            return scans
        budget -= (len(data) if end < 0 else end) - start
        if end >= 0:
            pictures.append(end)
    return limit + 1 if markers <= 0 else scans


@contextlib.contextmanager
def buffer_of(fp: IO[bytes]) -> Iterator[Buffer]:
    """The whole file as a buffer, without a copy where it can: a read-only mmap of a real file,
    a BytesIO's own buffer, else one read(). The file's position is left where it was."""
    if isinstance(fp, io.BytesIO):
        with fp.getbuffer() as view:
            yield view
        return
    raw = getattr(fp, "raw", fp)
    if isinstance(raw, io.FileIO) and not raw.closed:
        fp.flush()  # a write still in the buffer would be missing from the mapping
        if os.fstat(raw.fileno()).st_size == 0:
            yield b""
            return
        try:
            mapped = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            pass  # a pipe or another file that cannot be mapped: read it instead
        else:
            with mapped:
                yield mapped
            return
    position = fp.tell()
    fp.seek(0)
    data = fp.read()
    fp.seek(position)
    yield data
