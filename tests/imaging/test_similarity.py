"""Perceptual hashes and the band probes the near-duplicate index relies on."""

from __future__ import annotations

import io
import random

import imagehash
import pytest
import pyvips
import skimage.data
from PIL import Image

from media_api.images.models import BANDS
from media_api.images.statements import band_probes
from media_api.imaging import similarity
from media_api.imaging.similarity import Fingerprint, distance, to_signed

MASK = (1 << 64) - 1


def _vips(pil: Image.Image) -> pyvips.Image:
    buf = io.BytesIO()
    pil.save(buf, "PNG")
    return pyvips.Image.new_from_buffer(buf.getvalue(), "")


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera"])
def test_phash_agrees_with_imagehash(name: str) -> None:
    """The reference pHash (imagehash: scipy's DCT, Pillow's resize) gives the same bits, or
    within two of them (the two resize the picture with different filters)."""
    pil = Image.fromarray(getattr(skimage.data, name)())
    ours = similarity.phash(_vips(pil)) & MASK
    reference = int(str(imagehash.phash(pil)), 16)
    assert distance(ours, reference) <= 2


def test_a_five_percent_crop_is_near_through_the_centre_hash() -> None:
    pil = Image.fromarray(skimage.data.astronaut())
    w, h = pil.size
    cropped = pil.crop((w // 20, h // 20, w - w // 20, h - h // 20))
    whole, crop = similarity.fingerprint(_vips(pil)), similarity.fingerprint(_vips(cropped))
    assert distance(whole.whole, crop.whole) > 6  # the frames alone drift apart
    assert whole.distance(crop) <= 6
    assert crop.distance(whole) == whole.distance(crop)
    other = similarity.fingerprint(_vips(Image.fromarray(skimage.data.coffee())))
    assert whole.distance(other) > 16


def test_signed_and_unsigned_hashes_compare_alike() -> None:
    value = 0xF0F0_0000_FFFF_1234
    signed = to_signed(value)
    assert signed < 0
    assert -(1 << 63) <= signed < 1 << 63
    assert signed & MASK == value
    assert distance(signed, value) == 0
    assert distance(to_signed(0), to_signed(MASK)) == 64
    assert Fingerprint(1, 2).distance(Fingerprint(1, 99)) == 0


@pytest.mark.parametrize("threshold", range(12))
def test_band_probes_reach_every_hash_within_the_threshold(threshold: int) -> None:
    """Multi-index hashing's guarantee, checked on random pairs: a hash within the threshold
    has some band among the probes (so the index query finds it)."""
    rng = random.Random(threshold)
    radius = threshold // BANDS
    for _ in range(200):
        query = to_signed(rng.getrandbits(64))
        flips = rng.sample(range(64), rng.randint(0, threshold))
        near = to_signed((query & MASK) ^ sum(1 << bit for bit in flips))
        assert distance(query, near) <= threshold
        assert any(
            (near >> (16 * band)) & 0xFFFF in band_probes((query,), band, radius)
            for band in range(BANDS)
        )


def test_band_probes_count_the_values_within_the_radius() -> None:
    assert len(band_probes((0,), 0, 0)) == 1
    assert len(band_probes((0,), 0, 1)) == 17
    assert len(band_probes((0,), 0, 2)) == 1 + 16 + 120
    # Two query hashes share their probes where they overlap.
    assert len(band_probes((0, 1), 0, 1)) == 17 + 17 - 2
