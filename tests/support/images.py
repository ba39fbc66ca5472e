"""Image factories: small distinct PNGs, and incompressible ones that cost real work."""

from __future__ import annotations

import io
import os

from PIL import ExifTags, Image


def png(seed: int = 0, size: int | tuple[int, int] = 32) -> bytes:
    """A solid-colour PNG, distinct bytes per seed; `size` is a side or (width, height)."""
    box = (size, size) if isinstance(size, int) else size
    buf = io.BytesIO()
    Image.new("RGB", box, (seed % 256, (seed // 256) % 256, 77)).save(buf, "PNG")
    return buf.getvalue()


def noise_png(side: int, mode: str = "L") -> bytes:
    """Noise (`L` gray, `RGB` colour): incompressible, about side**2 bytes per channel on the
    wire, and a decode or resize of it takes real time (no shrink-on-load)."""
    channels = len(mode)
    img = Image.frombytes(mode, (side, side), os.urandom(side * side * channels))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def noise_jpeg(width: int, height: int) -> bytes:
    """A photo-sized JPEG of noise: real decode and encode work, and slow on a throttled link."""
    img = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def jpeg(
    image: Image.Image,
    *,
    quality: int = 92,
    orientation: int | None = None,
    taken: str | None = None,
) -> bytes:
    """`image` as a JPEG, with an EXIF orientation tag and a DateTimeOriginal ("YYYY:MM:DD
    HH:MM:SS") when given."""
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    if taken is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = taken
    image.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()
