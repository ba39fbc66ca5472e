"""Perceptual hashes: 64-bit pHashes of the upright picture, compared by Hamming distance.

Each picture gets two: of the whole frame, and of its centre without a 5 % margin, so a copy
cropped by about that much matches its original (its whole frame is the original's centre).
Pure (numpy, pyvips). The choice of pHash over PDQ and dHash, the threshold, and the measured
separation on real photos: docs/near-duplicates.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["BITS", "Fingerprint", "distance", "fingerprint", "phash", "phash_of_gray", "to_signed"]

BITS: Final = 64
_SIDE: Final = 32  # the picture is shrunk to 32x32 grey before the DCT
_LOW: Final = 8  # the 8x8 lowest frequencies give the 64 bits
INNER_MARGIN: Final = 0.05  # cut from each side for the centre's hash


def _dct_matrix(n: int) -> NDArray[np.float64]:
    """DCT-II basis, unnormalised (as scipy.fftpack.dct): a uniform scale leaves the bits alone."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(math.pi * (2 * i + 1) * k / (2 * n))


_DCT: Final = _dct_matrix(_SIDE)[:_LOW]


def phash_of_gray(gray: NDArray[Any]) -> int:
    """pHash of a 32x32 grey image: each low frequency above their median is a 1 bit."""
    if gray.shape != (_SIDE, _SIDE):
        msg = f"expected a {_SIDE}x{_SIDE} grey image, got {gray.shape}"
        raise ValueError(msg)
    low = _DCT @ gray.astype(np.float64) @ _DCT.T
    bits = (low > np.median(low)).flatten()
    return to_signed(int("".join("1" if b else "0" for b in bits), 2))


def phash(image: Any) -> int:
    """pHash of an upright 8-bit pyvips image (any bands; alpha flattened on white)."""
    return _phash_grey(_grey(image))


def _grey(image: Any) -> Any:
    """One grey band, alpha flattened on white, in memory (both hashes read it)."""
    if image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    if image.bands >= 3:
        image = image.colourspace("b-w")
    return image.extract_band(0).copy_memory()


def _phash_grey(grey: Any) -> int:
    # The aspect ratio is dropped on purpose: a resized copy shrinks to the same 32x32.
    small = grey.thumbnail_image(_SIDE, height=_SIDE, size="force", no_rotate=True)
    raw = np.frombuffer(bytes(small.cast("uchar").write_to_memory()), dtype=np.uint8)
    return phash_of_gray(raw.reshape(small.height, small.width)[:_SIDE, :_SIDE])


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The whole frame's hash and the centre's, as signed 64-bit integers."""

    whole: int
    centre: int

    def distance(self, other: Fingerprint) -> int:
        """How far apart two pictures look: the nearer of frame to frame and either frame to
        the other's centre (one of them a crop of the other)."""
        return min(
            distance(self.whole, other.whole),
            distance(self.whole, other.centre),
            distance(self.centre, other.whole),
        )


def fingerprint(image: Any) -> Fingerprint:
    """Both hashes of an upright 8-bit pyvips image, from one grey conversion."""
    grey = _grey(image)
    dx, dy = round(grey.width * INNER_MARGIN), round(grey.height * INNER_MARGIN)
    centre = grey.extract_area(dx, dy, grey.width - 2 * dx, grey.height - 2 * dy)
    return Fingerprint(whole=_phash_grey(grey), centre=_phash_grey(centre))


def to_signed(value: int) -> int:
    """The 64 bits as Postgres's signed bigint holds them."""
    return value - (1 << BITS) if value >= 1 << (BITS - 1) else value


def distance(a: int, b: int) -> int:
    """Hamming distance between two hashes (signed or not)."""
    return ((a ^ b) & ((1 << BITS) - 1)).bit_count()
