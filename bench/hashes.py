"""Near-duplicate hashes: our pHash against PDQ and imagehash's dHash/pHash, on real photos.

Run: .venv/bin/python -m bench.hashes [--repeats 21]

35 real photos (the corpus and scikit-image's package data, read from disk: nothing is fetched),
each decoded upright as production does; six edited copies of each (50 %, 25 %, JPEG q50, 5 %
crop, brightness +10 %, saturation +15 %) are encoded and decoded again as an upload would be.
Every hash sees the same pixels: the upright decode shrunk to 1024 px. Distances original vs
copy, between distinct photos, the threshold sweep for the 4x16-bit band index, and the cost per
hash (medians of --repeats, one libvips thread). Method: docs/near-duplicates.md.
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pdqhash
import pyvips
import skimage
from numpy.typing import NDArray
from PIL import Image, ImageEnhance

from media_api.imaging import probe, similarity
from media_api.imaging.presets import DEFAULT_PRESETS, Preset
from media_api.imaging.variants import decode_upright

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "corpus"
SKIMAGE = Path(skimage.__file__).parent / "data"
HASH_SIDE = 1024  # production hashes a copy shrunk to this long side
FULL = (Preset("full", 8192, crop=False),)  # the edits start from the full-size upright picture
TIMING_PHOTO = "orientation/avif_irot_orientation6.avif"  # 3024x4032 iPhone photo

# Real photographs only (looked at one by one); the rest of the corpus is test patterns, logos,
# glitches or images under 200 px. The two motorcycle files are a stereo pair: one scene seen
# from two points a few cm apart, kept out of the distinct pairs and reported on their own.
PHOTOS = (
    (CORPUS, "valid/heic_iphone_photo.heic"),
    (CORPUS, "valid/heic_example.heic"),
    (CORPUS, "valid/avif_example.avif"),
    (CORPUS, "valid/jpeg_baseline_testorig.jpg"),
    (CORPUS, "valid/jpeg_progressive_app13.jpg"),
    (CORPUS, "valid/png_16bit_icc_monkey.png"),
    (CORPUS, "valid/tiff_jpeg_ycbcr.tif"),
    (CORPUS, "orientation/jpeg_landscape_exif1.jpg"),
    (CORPUS, "orientation/jpeg_portrait_exif0.jpg"),
    (CORPUS, "orientation/avif_irot_orientation6.avif"),
    (CORPUS, "orientation/avif_irot1_imir0.avif"),
    (CORPUS, "orientation/png_xmp_orientation.png"),
    (CORPUS, "tricky/jpeg_ultrahdr_gainmap.jpg"),
    (CORPUS, "tricky/jpeg_corrupted_camera.jpg"),
    (CORPUS, "tricky/jpeg_junk_in_header.jpg"),
    (CORPUS, "tricky/jpeg_mpo_stereo.mpo"),
    (CORPUS, "tricky/jpeg_icc_512k_multi_app2.jpg"),
    (CORPUS, "tricky/jpeg_xyb_icc.jpg"),
    (SKIMAGE, "astronaut.png"),
    (SKIMAGE, "brick.png"),
    (SKIMAGE, "camera.png"),
    (SKIMAGE, "chelsea.png"),
    (SKIMAGE, "coffee.png"),
    (SKIMAGE, "coins.png"),
    (SKIMAGE, "grass.png"),
    (SKIMAGE, "gravel.png"),
    (SKIMAGE, "hubble_deep_field.jpg"),
    (SKIMAGE, "ihc.png"),
    (SKIMAGE, "moon.png"),
    (SKIMAGE, "motorcycle_left.png"),
    (SKIMAGE, "motorcycle_right.png"),
    (SKIMAGE, "page.png"),
    (SKIMAGE, "retina.jpg"),
    (SKIMAGE, "rocket.jpg"),
    (SKIMAGE, "text.png"),
)
STEREO = frozenset({"motorcycle_left.png", "motorcycle_right.png"})


def _scale(factor: float) -> Callable[[Image.Image], Image.Image]:
    def edit(im: Image.Image) -> Image.Image:
        size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
        return im.resize(size, Image.Resampling.LANCZOS)

    return edit


def _crop(im: Image.Image) -> Image.Image:
    dx, dy = round(im.width * 0.05), round(im.height * 0.05)
    return im.crop((dx, dy, im.width - dx, im.height - dy))


def _brighter(im: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(im).enhance(1.10)


def _saturated(im: Image.Image) -> Image.Image:
    return ImageEnhance.Color(im).enhance(1.15)


def _same(im: Image.Image) -> Image.Image:
    return im


# name -> (edit, JPEG quality of the uploaded copy)
EDITS: dict[str, tuple[Callable[[Image.Image], Image.Image], int]] = {
    "50 %": (_scale(0.5), 90),
    "25 %": (_scale(0.25), 90),
    "JPEG q50": (_same, 50),
    "crop 5 %": (_crop, 90),
    "bright +10 %": (_brighter, 90),
    "sat +15 %": (_saturated, 90),
}


# --- the production path and the four hashes --------------------------------------------------


def upright(data: bytes, presets: tuple[Preset, ...] = DEFAULT_PRESETS) -> Any:
    """The upright 8-bit sRGB pyvips image production decodes (up to 2048 px by default)."""
    kind = probe.sniff(data[: probe.SNIFF_BYTES])
    if kind is None:
        raise ValueError("not an image the service accepts")
    return decode_upright(data, kind, presets)[1]


def shrink(image: Any) -> Any:
    """The copy production hashes."""
    return image.thumbnail_image(HASH_SIDE, height=HASH_SIDE, size="down", no_rotate=True)


def to_rgb(image: Any) -> NDArray[np.uint8]:
    """HxWx3 uint8, alpha flattened on white, grey repeated: what PDQ and Pillow are given."""
    if image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    if image.bands == 1:
        image = image.bandjoin([image, image])
    raw = np.frombuffer(bytes(image.write_to_memory()), dtype=np.uint8)
    return raw.reshape(image.height, image.width, image.bands)


def _bits_to_int(bits: Any) -> int:
    return int("".join("1" if b else "0" for b in np.asarray(bits).flatten()), 2)


def ours(image: Any) -> int:
    return similarity.phash(image) & ((1 << similarity.BITS) - 1)


def pdq(rgb: NDArray[np.uint8]) -> int:
    return _bits_to_int(pdqhash.compute(rgb)[0])


def dhash(pil: Image.Image) -> int:
    return _bits_to_int(imagehash.dhash(pil).hash)


def iphash(pil: Image.Image) -> int:
    return _bits_to_int(imagehash.phash(pil).hash)


@dataclass(frozen=True)
class Candidate:
    name: str
    bits: int
    hash: Callable[[Any], Any]  # from the 1024-px pyvips image, conversion included
    input: Callable[[Any], Any]  # the conversion alone, so the hash can be timed without it
    core: Callable[[Any], Any]
    # How two hashes compare, and how many band lookups one query makes per probed value.
    measure: Callable[[Any, Any], int] = lambda a, b: dist(a, b)
    band_sets: int = 4


def _pil(image: Any) -> Image.Image:
    return Image.fromarray(to_rgb(image))


def _fingerprint(image: Any) -> similarity.Fingerprint:
    return similarity.fingerprint(image)


CANDIDATES = (
    # What ships: the whole frame's pHash and the centre's (a 5 % margin cut), compared as
    # Fingerprint.distance; the index probes 3 hash/band-set pairs of 4 bands.
    Candidate(
        "ours, whole + centre (ships)",
        64,
        _fingerprint,
        lambda im: im,
        _fingerprint,
        measure=lambda a, b: a.distance(b),
        band_sets=12,
    ),
    Candidate("ours (pHash, libvips)", 64, ours, lambda im: im, ours),
    Candidate("imagehash pHash", 64, lambda im: iphash(_pil(im)), _pil, iphash),
    Candidate("imagehash dHash", 64, lambda im: dhash(_pil(im)), _pil, dhash),
    Candidate("PDQ", 256, lambda im: pdq(to_rgb(im)), to_rgb, pdq),
)


# --- measuring ----------------------------------------------------------------------------------


def encode(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def hashes_of(image: Any) -> dict[str, int]:
    small = shrink(image)
    return {c.name: c.hash(small) for c in CANDIDATES}


def collect() -> tuple[list[str], dict[str, dict[str, int]], dict[str, dict[str, dict[str, int]]]]:
    """Hashes of every original (label -> candidate -> hash) and of every edited upload."""
    labels: list[str] = []
    originals: dict[str, dict[str, int]] = {}
    edited: dict[str, dict[str, dict[str, int]]] = {}
    for base, rel in PHOTOS:
        data = (base / rel).read_bytes()
        label = Path(rel).name
        labels.append(label)
        originals[label] = hashes_of(upright(data))
        full = Image.fromarray(to_rgb(upright(data, FULL)))
        edited[label] = {
            edit: hashes_of(upright(encode(fn(full), quality)))
            for edit, (fn, quality) in EDITS.items()
        }
    return labels, originals, edited


def dist(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def percentile(values: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(values), q, method="lower"))


def distance_tables(
    labels: list[str],
    originals: dict[str, dict[str, int]],
    edited: dict[str, dict[str, dict[str, int]]],
) -> tuple[str, str, dict[str, list[int]], dict[str, dict[str, list[int]]]]:
    """Per edit max / mean of original vs copy; then the separation from distinct photos."""
    per_edit = [
        "| hash | bits | " + " | ".join(EDITS) + " |",
        "|---|---:|" + "---:|" * len(EDITS),
    ]
    separation = [
        "| hash | worst same | worst same, no crop | closest distinct | 1st pct distinct "
        "| gap | gap, no crop | stereo pair |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pairs_by: dict[str, list[int]] = {}
    same_by: dict[str, dict[str, list[int]]] = {}
    left, right = sorted(STEREO)
    for c in CANDIDATES:
        same = {
            e: [c.measure(originals[p][c.name], edited[p][e][c.name]) for p in labels]
            for e in EDITS
        }
        pairs = [
            c.measure(originals[a][c.name], originals[b][c.name])
            for a, b in itertools.combinations(labels, 2)
            if not {a, b} <= STEREO
        ]
        stereo = c.measure(originals[left][c.name], originals[right][c.name])
        worst = max(max(v) for v in same.values())
        worst_kept = max(max(v) for e, v in same.items() if e != "crop 5 %")
        closest = min(pairs)

        def frac(d: float, bits: int = c.bits) -> str:
            return f"{d:g} ({d / bits:.0%})"

        def gap(d: int, bits: int = c.bits) -> str:
            return f"{d:+d} ({d / bits:+.0%})"

        cells = [f"{max(v)} / {statistics.mean(v):.1f}" for v in same.values()]
        per_edit.append(f"| {c.name} | {c.bits} | " + " | ".join(cells) + " |")
        separation.append(
            f"| {c.name} | {frac(worst)} | {frac(worst_kept)} | {frac(closest)} "
            f"| {frac(percentile(pairs, 1))} | {gap(closest - worst)} "
            f"| {gap(closest - worst_kept)} | {frac(stereo)} |"
        )
        pairs_by[c.name] = pairs
        same_by[c.name] = same
    return "\n".join(per_edit), "\n".join(separation), pairs_by, same_by


def probes(radius: int) -> int:
    """16-bit band values within radius of one band: the index lookups per band."""
    return sum(math.comb(16, k) for k in range(radius + 1))


def sweep_table(
    name: str, bits: int, same: dict[str, list[int]], pairs: list[int], band_sets: int = 4
) -> str:
    """Per threshold: edited copies found (of n per edit) and distinct pairs wrongly matched."""
    n = len(next(iter(same.values())))
    banded = bits == 64
    head = f"| t | band radius | lookups ({band_sets} bands) | " if banded else "| t | "
    lines = [
        head + " | ".join(EDITS) + f" | false pairs (of {len(pairs)}) |",
        ("|---:|---:|---:|" if banded else "|---:|") + "---:|" * (len(EDITS) + 1),
    ]
    steps = range(2, 23, 2) if banded else (16, 24, 31, 40, 48, 64, 80, 96, 112)
    for t in steps:
        found = [f"{sum(d <= t for d in v)}/{n}" for v in same.values()]
        false = sum(d <= t for d in pairs)
        lead = f"| {t} | {t // 4} | {band_sets * probes(t // 4)} | " if banded else f"| {t} | "
        lines.append(lead + " | ".join(found) + f" | {false} |")
    return f"{name}:\n\n" + "\n".join(lines)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median ms of repeats runs after one warm-up."""
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def cost_table(repeats: int) -> str:
    data = (CORPUS / TIMING_PHOTO).read_bytes()
    decoded = upright(data)
    small = shrink(decoded).copy_memory()
    decode_ms = timed(lambda: upright(data), max(3, repeats // 3))
    lines = [
        "| hash | ms/hash (1024 px input ready) | ms incl. shrink + conversion "
        "(from the 2048 px decode) | ms incl. decode of the original |",
        "|---|---:|---:|---:|",
    ]
    for c in CANDIDATES:
        ready = c.input(small)
        core = timed(lambda c=c, ready=ready: c.core(ready), repeats)
        total = timed(lambda c=c: c.hash(shrink(decoded).copy_memory()), repeats)
        lines.append(f"| {c.name} | {core:.1f} | {total:.1f} | {total + decode_ms:.0f} |")
    lines.append("")
    lines.append(
        f"Decode of the original ({TIMING_PHOTO}, {len(data) / 1e6:.1f} MB, to "
        f"{decoded.width}x{decoded.height}; paid once for the variants anyway): "
        f"{decode_ms:.0f} ms; hash input {small.width}x{small.height}."
    )
    return "\n".join(lines)


def versions() -> str:
    """Machine and library versions for the results header."""
    import PIL

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Pillow {PIL.__version__}, pyvips {pyvips.__version__} (libvips {pyvips.version(0)}."
        f"{pyvips.version(1)}.{pyvips.version(2)}), numpy {np.__version__}, imagehash "
        f"{imagehash.__version__}, pdqhash (PyPI), scikit-image {skimage.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    pyvips.concurrency_set(1)
    print(versions())
    started = time.perf_counter()
    labels, originals, edited = collect()
    print(f"{len(labels)} photos, {len(EDITS)} edits each, {time.perf_counter() - started:.0f} s")
    print()
    per_edit, separation, pairs_by, same_by = distance_tables(labels, originals, edited)
    print(f"Original vs edited upload, Hamming distance max / mean over {len(labels)} photos:")
    print()
    print(per_edit)
    print()
    print(
        "Separation (fraction of the hash's bits in brackets; gap = closest distinct - worst same):"
    )
    print()
    print(separation)
    print()
    for c in CANDIDATES:
        if c.name.startswith("ours") or c.bits == 256:
            print(sweep_table(c.name, c.bits, same_by[c.name], pairs_by[c.name], c.band_sets))
            print()
    print("Cost (one thread):")
    print()
    print(cost_table(args.repeats))


if __name__ == "__main__":
    main()
