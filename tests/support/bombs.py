"""Builders of decode bombs that pass the size and pixel limits, for the tests that refuse them."""

from __future__ import annotations

import io

from PIL import Image


def _segment_end(data: bytes, pos: int) -> int:
    """End of the marker segment starting at ``pos`` (0xFF, code, 2-byte length, payload)."""
    return pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def _entropy_end(data: bytes, pos: int) -> int:
    """Offset of the marker ending the entropy-coded data at ``pos`` (0xFF00 and RSTn are data)."""
    while True:
        pos = data.index(b"\xff", pos)
        code = data[pos + 1]
        if code != 0 and not 0xD0 <= code <= 0xD7:
            return pos
        pos += 2


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan, its SOS segment plus its entropy-coded data, in a clean JPEG."""
    scans = []
    pos = 2  # after SOI
    while data[pos + 1] != 0xD9:
        end = _segment_end(data, pos)
        if data[pos + 1] == 0xDA:
            end = _entropy_end(data, end)
            scans.append((pos, end))
        pos = end
    return scans


def many_scan_jpeg(scans: int, size: tuple[int, int] = (4000, 4000)) -> bytes:
    """A valid progressive JPEG with ``scans`` scans: the decode bomb of issue 13.

    Pillow saves a smooth colour picture progressively (libjpeg's default script: a DC scan, then
    the first AC scan, luma coefficients 1-5, and eight more). That first AC scan is then repeated
    until the file holds ``scans`` in all. Every copy is a legal scan that libjpeg decodes again
    over the whole frame (it only warns about the bogus progression), so at 4000x4000 each costs
    over a millisecond of CPU while adding ~30 bytes: 20,000 of them make a 0.95 MB file that
    takes 25 s of CPU to decode on the 2-core dev machine (the issue's 1.15 MB sample: ~18 s),
    yet passes every byte, pixel and frame limit.
    """
    # Stepped gradients (256 levels stretched without smoothing): real AC data at every step
    # edge, yet small scans, and built and encoded in a fraction of a second.
    ramp, nearest = Image.linear_gradient("L"), Image.Resampling.NEAREST
    bands = [
        ramp.resize(size, nearest),
        ramp.transpose(Image.Transpose.ROTATE_90).resize(size, nearest),
        Image.radial_gradient("L").resize(size, nearest),
    ]
    out = io.BytesIO()
    Image.merge("RGB", bands).save(out, "JPEG", quality=90, progressive=True)
    data = out.getvalue()
    found = _scans(data)
    if len(found) > scans:
        msg = f"a progressive save has {len(found)} scans; ask for at least that many"
        raise ValueError(msg)
    start, end = found[1]  # the first AC scan, right after the DC scan
    repeats = scans - len(found)
    # Inserted right after it, before the next scan's DHT: the Huffman tables still match.
    return data[:end] + data[start:end] * repeats + data[end:]
