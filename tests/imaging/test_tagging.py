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
from PIL import Image

from media_api.imaging import tagging
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
    assert chelsea.model == tagging.MODEL_NAME
    assert chelsea.model_version == tagger.model_version
    revision, classifier, categories, nsfw = chelsea.model_version.split(".")
    assert revision == tagging.PIPELINE_REVISION
    onnx_sha = hashlib.sha256(tagging.CLASSIFIER_PATH.read_bytes()).hexdigest()
    assert onnx_sha.startswith(classifier)
    assert hashlib.sha256(tagging.CATEGORIES_PATH.read_bytes()).hexdigest().startswith(categories)
    assert re.fullmatch(r"[0-9a-f]{8}", nsfw)


def test_the_committed_model_matches_its_checksum_file() -> None:
    sha_file = tagging.CLASSIFIER_PATH.with_name(tagging.CLASSIFIER_PATH.name + ".sha256")
    digest, name = sha_file.read_text().split()
    assert name == tagging.CLASSIFIER_PATH.name
    assert hashlib.sha256(tagging.CLASSIFIER_PATH.read_bytes()).hexdigest() == digest


def test_a_tampered_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / tagging.CLASSIFIER_PATH.name
    copy.write_bytes(tagging.CLASSIFIER_PATH.read_bytes()[:-1] + b"\0")
    (tmp_path / (copy.name + ".sha256")).write_text(
        tagging.CLASSIFIER_PATH.with_name(copy.name + ".sha256").read_text()
    )
    monkeypatch.setattr(tagging, "CLASSIFIER_PATH", copy)
    with pytest.raises(tagging.ModelError, match="sha256"):
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
