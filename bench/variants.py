"""Variants per second per core: the shipped render() against its floor and a naive Pillow pipeline.

Run: .venv/bin/python -m bench.variants [--repeats 7] [--thumbor-venv /tmp/thumbor-venv]

12 MP and 24 MP JPEGs made from the corpus's iPhone photo; every path (naive, floor, render,
render/method0, render/pillow, thumbor if its venv exists) in a fresh single-threaded
subprocess, interleaved round-robin, medians of --repeats. The floor is the same work with
nothing between the steps: one shrink-on-load decode as render() does it, plus the encodes of
the three variants at render()'s settings, each a separately timed step (the resizes between
them untimed). Method: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "fixtures" / "corpus" / "orientation" / "avif_irot_orientation6.avif"
SIZES = {"12 MP": (4000, 3000), "24 MP": (6000, 4000)}
PRESETS = ((256, True), (1024, False), (2048, False))  # DEFAULT_PRESETS as (size, crop)
PATHS = ("naive", "floor", "render", "render/method0", "render/pillow")
STEPS = ("decode", "thumb", "medium", "large")


def make_images(folder: Path) -> dict[str, Path]:
    """The two bench JPEGs, derived from one real photo (see the module docstring)."""
    with Image.open(SOURCE) as im:
        # Already upright as decoded (libavif applies irot); turned only to make it landscape.
        photo = im.convert("RGB").transpose(Image.Transpose.ROTATE_90)
    made = {}
    for label, (width, height) in SIZES.items():
        src_w, src_h = photo.size
        crop_h = min(src_h, src_w * height // width)
        top = (src_h - crop_h) // 2
        box = (0, top, src_w, top + crop_h)
        out = photo.resize((width, height), Image.Resampling.LANCZOS, box=box)
        path = folder / f"{label.replace(' ', '').lower()}.jpg"
        out.save(path, "JPEG", quality=90)
        made[label] = path
    return made


# --- child side: one path, driven over stdin/stdout -------------------------------------------


def naive(path: Path) -> list[int]:
    """The baseline the issue names, written the way a first version would be."""
    sizes = []
    with Image.open(path) as opened:
        opened.load()
        im = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = im.size
    for size, crop in PRESETS:
        if crop:
            out = ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS)
        else:
            scale = min(1.0, size / max(width, height))
            target = (round(width * scale), round(height * scale))
            out = im.resize(target, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        out.save(buf, "WEBP")
        sizes.append(len(buf.getvalue()))
    return sizes


def floor(path: Path) -> tuple[list[int], dict[str, float], float]:
    """render()'s decode and encodes as separate timed steps: bytes, CPU s per step, wall s."""
    import pyvips  # type: ignore[import-untyped, unused-ignore]

    from media_api.imaging import variants
    from media_api.imaging.presets import DEFAULT_PRESETS

    data = path.read_bytes()
    start, wall = time.process_time(), time.perf_counter()
    # What _decode_vips() does for an untagged, upright JPEG: its checks add nothing here.
    header = pyvips.Image.new_from_buffer(data, "", fail_on="warning")
    target = variants._long_side(header.width, header.height, DEFAULT_PRESETS)
    shrink = variants.jpeg_shrink(max(header.width, header.height), target)
    if shrink > 1:
        stage0 = pyvips.Image.new_from_buffer(
            data, "", shrink=shrink, access="sequential", fail_on="warning"
        ).thumbnail_image(target, height=target, size="down")
    else:
        stage0 = pyvips.Image.thumbnail_buffer(
            data, target, height=target, size="down", fail_on="warning"
        )
    stage0 = stage0.copy_memory()
    steps = {"decode": time.process_time() - start}
    wall = time.perf_counter() - wall
    # The very images render() encodes, made untimed; the encodes at render()'s settings.
    images = {
        preset.name: image.copy_memory() for preset, image in variants.cuts(stage0, DEFAULT_PRESETS)
    }
    sizes = []
    for name in STEPS[1:]:
        image = images[name]
        effort = variants.webp_effort(image.width * image.height)
        start, began = time.process_time(), time.perf_counter()
        data = image.webpsave_buffer(Q=variants.WEBP_QUALITY, effort=effort, keep="none")
        steps[name] = time.process_time() - start
        wall += time.perf_counter() - began
        sizes.append(len(data))
    return sizes, steps, wall


def _runner(name: str) -> Callable[[Path], list[int]]:
    """Import lazily so each child's idle RSS holds only what its path needs."""
    if name == "naive":
        return naive
    from media_api.imaging import variants
    from media_api.imaging.presets import DEFAULT_PRESETS

    if name == "render/method0":
        # The alternative not shipped (issue 5's): method 2 for medium, 0 for large (+28 %).
        tiers = ((300_000, 4), (1_500_000, 2))
        variants._WEBP_EFFORT_BY_PIXELS = tiers  # type: ignore[misc, assignment]
        variants._WEBP_EFFORT_LARGEST = 0  # type: ignore[misc]
    if name in ("render", "render/method0"):
        return lambda path: [len(v.data) for v in variants.render(path).variants]

    def pillow_path(path: Path) -> list[int]:
        data = path.read_bytes()
        presets = DEFAULT_PRESETS
        stage0 = variants._decode_pillow(data, "JPEG", presets)
        return [len(v.data) for v in variants._cascade(stage0, presets, "webp").variants]

    return pillow_path


def _status_kb(key: str) -> int:
    """A VmRSS/VmHWM line of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def child(name: str) -> None:
    """Serve "run <path>" / "end" commands, one JSON line each, so the parent can interleave."""
    run = None if name == "floor" else _runner(name)
    print(json.dumps({"idle_kb": _status_kb("VmRSS")}), flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command != "run":
            break
        if run is None:
            sizes, steps, wall = floor(Path(arg))
            reply = {"wall": wall, "cpu": sum(steps.values()), "bytes": sizes, "steps": steps}
        else:
            wall, cpu = time.perf_counter(), time.process_time()
            sizes = run(Path(arg))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            reply = {"wall": wall, "cpu": cpu, "bytes": sizes}
        print(json.dumps(reply), flush=True)
    print(json.dumps({"hwm_kb": _status_kb("VmHWM")}), flush=True)


def sweep(path: Path) -> None:
    """WebP method against time, bytes and PSNR for the 2048 px variant of one image."""
    import pyvips  # type: ignore[import-untyped, unused-ignore]

    big = pyvips.Image.thumbnail(str(path), 2048, height=2048, size="down").copy_memory()
    reference = big.cast("float")
    for method in range(7):
        big.webpsave_buffer(Q=80, effort=method, keep="none")
        times = []
        for _ in range(5):
            start = time.process_time()
            data = big.webpsave_buffer(Q=80, effort=method, keep="none")
            times.append(time.process_time() - start)
        decoded = pyvips.Image.new_from_buffer(data, "").cast("float")
        mse = ((reference - decoded) ** 2).avg()
        psnr = 10 * math.log10(255**2 / mse)
        row = {"method": method, "cpu": statistics.median(times), "bytes": len(data), "psnr": psnr}
        print(json.dumps(row), flush=True)


# --- parent side -------------------------------------------------------------------------------


@dataclass
class Result:
    """Measurements of one path on one image."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)
    idle_kb: int = 0
    hwm_kb: int = 0


class Child:
    """One fresh interpreter running one path."""

    def __init__(self, name: str) -> None:
        env = dict(os.environ, VIPS_CONCURRENCY="1", PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.variants", "--child", name],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.result = Result(idle_kb=self._read()["idle_kb"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench child exited with {self.proc.wait()}")
        data: dict[str, Any] = json.loads(line)
        return data

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def run(self, image: Path, *, record: bool = True) -> None:
        self._send(f"run {image}")
        data = self._read()
        if record:
            self.result.wall.append(data["wall"])
            self.result.cpu.append(data["cpu"])
            self.result.sizes = data["bytes"]
            if "steps" in data:
                self.result.steps.append(data["steps"])

    def close(self) -> Result:
        self._send("end")
        self.result.hwm_kb = self._read()["hwm_kb"]
        self.proc.wait(timeout=30)
        return self.result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Thumbor:
    """A thumbor server on loopback, timed from outside like any other child."""

    def __init__(self, venv: Path, folder: Path) -> None:
        conf = folder / "thumbor.conf"
        conf.write_text(
            "LOADER = 'thumbor.loaders.file_loader'\n"
            f"FILE_LOADER_ROOT_PATH = '{folder}'\n"
            "STORAGE = 'thumbor.storages.no_storage'\n"
            "RESULT_STORAGE = 'thumbor.result_storages.no_storage'\n"
            "RESPECT_ORIENTATION = True\n"
            "QUALITY = 80\n"
            "ALLOW_UNSAFE_URL = True\n"
        )
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [
                str(venv / "bin" / "thumbor"),
                *("--ip=127.0.0.1", f"--port={self.port}", f"--conf={conf}", "--log-level=error"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self._get("/healthcheck")
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError("thumbor did not start") from None
                time.sleep(0.2)
        self.result = Result(idle_kb=_proc_kb(self.proc.pid, "VmRSS"))

    def _get(self, path: str) -> bytes:
        """One GET on loopback; a fresh connection each time, as thumbor's clients mostly do."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"thumbor answered {response.status} for {path}")
            return body
        finally:
            conn.close()

    def run(self, image: Path, *, record: bool = True) -> None:
        urls = [
            f"/unsafe/256x256/filters:format(webp)/{image.name}",
            f"/unsafe/fit-in/1024x1024/filters:format(webp)/{image.name}",
            f"/unsafe/fit-in/2048x2048/filters:format(webp)/{image.name}",
        ]
        cpu, wall = _proc_cpu(self.proc.pid), time.perf_counter()
        sizes = [len(self._get(url)) for url in urls]
        wall, cpu = time.perf_counter() - wall, _proc_cpu(self.proc.pid) - cpu
        if record:
            self.result.wall.append(wall)
            self.result.cpu.append(cpu)
            self.result.sizes = sizes

    def close(self) -> Result:
        self.result.hwm_kb = _proc_kb(self.proc.pid, "VmHWM")
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return self.result


class Runner(Protocol):
    """What measure() needs of a child interpreter or the thumbor server."""

    proc: subprocess.Popen[Any]

    def run(self, image: Path, *, record: bool = True) -> None: ...

    def close(self) -> Result: ...


@contextlib.contextmanager
def runners(names: list[str], venv: Path | None, folder: Path) -> Iterator[dict[str, Runner]]:
    """Start every path's process; always stop them, even when a run fails."""
    started: dict[str, Runner] = {}
    try:
        for name in names:
            started[name] = Child(name)
        if venv is not None:
            started["thumbor"] = Thumbor(venv, folder)
        yield started
    finally:
        for runner in started.values():
            if runner.proc.poll() is None:
                runner.proc.kill()
                runner.proc.wait()


def measure(image: Path, repeats: int, venv: Path | None) -> dict[str, Result]:
    """Interleave the paths run by run, so noise is shared; fresh processes per image."""
    results: dict[str, Result] = {}
    with runners(list(PATHS), venv, image.parent) as started:
        for runner in started.values():
            runner.run(image, record=False)
        order = list(started)
        for index in range(repeats):
            rotated = order[index % len(order) :] + order[: index % len(order)]
            for name in rotated:
                started[name].run(image)
        for name, runner in started.items():
            results[name] = runner.close()
    return results


def table(all_results: dict[str, dict[str, Result]]) -> str:
    """The markdown table for docs/benchmarks.md."""
    lines = [
        "| image | path | ms/image (wall) | CPU ms/image | variants/s/core | speed-up vs naive "
        "| peak RSS MB (idle) | bytes thumb / medium / large |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, results in all_results.items():
        base = statistics.median(results["naive"].cpu)
        for name, res in results.items():
            cpu = statistics.median(res.cpu)
            wall = statistics.median(res.wall)
            sizes = " / ".join(f"{s / 1000:.0f} kB" for s in res.sizes)
            lines.append(
                f"| {label} | {name} | {wall * 1000:.0f} | {cpu * 1000:.0f} | {3 / cpu:.1f} "
                f"| {base / cpu:.2f}x | {res.hwm_kb / 1024:.0f} ({res.idle_kb / 1024:.0f}) "
                f"| {sizes} |"
            )
    return "\n".join(lines)


def floor_table(all_results: dict[str, dict[str, Result]]) -> str:
    """The floor step by step against render(), CPU medians from the same interleaved run."""
    lines = [
        "| image | decode ms | encode thumb / medium / large ms | floor ms | render ms "
        "| floor / render | best of each: floor / render |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for label, results in all_results.items():
        steps = results["floor"].steps
        each = {name: statistics.median(s[name] for s in steps) * 1000 for name in STEPS}
        low = statistics.median(results["floor"].cpu)
        ours = statistics.median(results["render"].cpu)
        # Background load only ever adds time, so the fastest runs are the least disturbed.
        best = min(results["floor"].cpu), min(results["render"].cpu)
        encodes = " / ".join(f"{each[name]:.0f}" for name in STEPS[1:])
        lines.append(
            f"| {label} | {each['decode']:.0f} | {encodes} | {low * 1000:.0f} "
            f"| {ours * 1000:.0f} | {low / ours:.2f} "
            f"| {best[0] * 1000:.0f} / {best[1] * 1000:.0f} = {best[0] / best[1]:.2f} |"
        )
    return "\n".join(lines)


def bytes_table(all_results: dict[str, dict[str, Result]]) -> str:
    """Each variant's bytes against naive's for the same variant."""
    names = ("thumb", "medium", "large")
    lines = [
        "| image | path | " + " | ".join(f"{n} bytes (vs naive)" for n in names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for label, results in all_results.items():
        base = results["naive"].sizes
        for name, res in results.items():
            if name == "naive":
                cells = [f"{b}" for b in base]
            else:
                cells = [f"{b} ({b / n - 1:+.1%})" for b, n in zip(res.sizes, base, strict=True)]
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(image: Path) -> str:
    """Run the WebP method sweep in a single-threaded child and format it."""
    env = dict(os.environ, VIPS_CONCURRENCY="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "bench.variants", "--sweep", str(image)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    ref = next(r for r in rows if r["method"] == 4)
    lines = [
        "| WebP method | CPU ms | bytes | vs method 4 | PSNR dB |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['cpu'] * 1000:.0f} | {r['bytes']} "
            f"| {r['bytes'] / ref['bytes'] - 1:+.1%} | {r['psnr']:.2f} |"
        )
    return "\n".join(lines)


def versions() -> str:
    """Machine and library versions for the results header."""
    import PIL
    import pyvips
    from PIL import features

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Pillow {PIL.__version__} (libjpeg-turbo {features.version('jpg')}, "
        f"libwebp {features.version('webp')}), pyvips {pyvips.__version__} "
        f"(libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}), "
        f"{time.strftime('%Y-%m-%d')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    default_venv = Path(tempfile.gettempdir()) / "thumbor-venv"
    parser.add_argument("--thumbor-venv", type=Path, default=default_venv)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sweep", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.sweep:
        sweep(args.sweep)
        return
    venv = args.thumbor_venv if (args.thumbor_venv / "bin" / "thumbor").exists() else None
    print(versions())
    if venv is None:
        print(f"thumbor: no venv at {args.thumbor_venv}, skipped")
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmp:
        images = make_images(Path(tmp))
        all_results = {}
        for label, path in images.items():
            print(f"{label}: {path.stat().st_size / 1e6:.2f} MB JPEG", flush=True)
            all_results[label] = measure(path, args.repeats, venv)
        print()
        print(table(all_results))
        print()
        print("The floor (CPU medians, same run; floor / render = 1.00 means render() is at it):")
        print()
        print(floor_table(all_results))
        print()
        print("Bytes per variant against naive Pillow's:")
        print()
        print(bytes_table(all_results))
        print()
        print("WebP method sweep, 12 MP photo's 2048x1536 variant, q80, libvips, one thread:")
        print()
        print(sweep_table(images["12 MP"]))


if __name__ == "__main__":
    main()
