"""Upload throughput and server memory against file size.

Run: .venv/bin/python -m bench.upload [--sizes 1,20,100,200] [--repeat 3]

For each size the same bytes go three ways: loopback (a discarding socket), s3 put (boto3
multipart to the same SeaweedFS) and api (POST /v1/images), with the API's peak RSS sampled
every 5 ms; each path has an untimed warm-up. Method: docs/benchmarks.md ("Upload throughput").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import psutil
from boto3.s3.transfer import TransferConfig
from PIL import Image

from bench.stack import api_process, bench_stack
from media_api.storage.s3 import S3Store

MB = 1024 * 1024
JPEG_BYTES_PER_PIXEL = 4.11  # noise at quality 100, 4:4:4 (measured)


def make_jpeg(target_bytes: int, path: Path) -> int:
    """A noise JPEG of about target_bytes (decodes to at most 50 MP, within the default cap)."""
    side = int((target_bytes / JPEG_BYTES_PER_PIXEL) ** 0.5)
    img = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    with path.open("wb") as fh:
        img.save(fh, "JPEG", quality=100, subsampling=0)
    return path.stat().st_size


def loopback_seconds(path: Path) -> float:
    """Copy the file over a loopback TCP connection to a reader that discards."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    size = path.stat().st_size
    done = threading.Event()

    def drain() -> None:
        conn, _ = server.accept()
        got = 0
        while got < size:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        conn.close()
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, path.open("rb") as fh:
        sock.sendfile(fh)
    done.wait()
    elapsed = time.perf_counter() - start
    server.close()
    return elapsed


def s3_put_seconds(store: S3Store, path: Path) -> float:
    """The storage ceiling: the API's own client config, parts of its size, one at a time."""
    config = TransferConfig(multipart_chunksize=store.part_bytes, max_concurrency=1)
    start = time.perf_counter()
    store.client.upload_file(str(path), store.bucket, f"bench/{path.name}", Config=config)
    return time.perf_counter() - start


class RssSampler:
    """Peak RSS of a process (and its children) while active."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in [self.proc, *self.proc.children(recursive=True)])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def api_seconds(
    http: httpx.Client, base: str, token: str, path: Path, sampler_pid: int
) -> tuple[float, int, int]:
    """Upload through the API; returns seconds, server RSS before and its peak during."""
    sampler = RssSampler(sampler_pid)
    before = sampler.rss()
    with sampler, path.open("rb") as fh:
        start = time.perf_counter()
        resp = http.post(
            f"{base}/v1/images",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": (path.name, fh, "image/jpeg")},
        )
        elapsed = time.perf_counter() - start
    if resp.status_code != 201:
        raise RuntimeError(f"upload failed: {resp.status_code} {resp.text}")
    return elapsed, before, sampler.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,20,100,200", help="file sizes in MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    # A 200 MB noise JPEG is 51 MP, just over the default 50 MP cap: the bench raises both caps.
    with bench_stack(MEDIA_MAX_UPLOAD_BYTES=str(256 * MB), MEDIA_MAX_PIXELS="60000000") as stack:
        work = stack.data_dir / "files"
        work.mkdir()
        store = S3Store(stack.settings)
        with (
            api_process(stack) as (base, proc),
            httpx.Client(timeout=300) as http,
            contextlib.closing(store),
        ):
            warm_up = work / "warm-up.jpg"
            make_jpeg(MB, warm_up)
            loopback_seconds(warm_up)
            s3_put_seconds(store, warm_up)
            api_seconds(http, base, stack.token, warm_up, proc.pid)
            warm_up.unlink()
            for size_mb in sizes:
                loop, put, api, peaks, befores = [], [], [], [], []
                for i in range(args.repeat):
                    path = work / f"{size_mb}mb-{i}.jpg"
                    nbytes = make_jpeg(size_mb * MB, path)
                    loop.append(nbytes / loopback_seconds(path))
                    put.append(nbytes / s3_put_seconds(store, path))
                    seconds, before, peak = api_seconds(http, base, stack.token, path, proc.pid)
                    api.append(nbytes / seconds)
                    befores.append(before)
                    peaks.append(peak)
                    path.unlink()
                rows.append(
                    (
                        size_mb,
                        statistics.median(loop),
                        statistics.median(put),
                        statistics.median(api),
                        max(befores),
                        max(peaks),
                    )
                )

    print(
        "| file | loopback MB/s | S3 PUT MB/s | API upload MB/s | API / S3 PUT "
        "| server RSS before | server peak RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for size_mb, loop, put, api, before, peak in rows:
        print(
            f"| {size_mb} MB | {loop / MB:,.0f} | {put / MB:,.0f} | {api / MB:,.0f} "
            f"| {api / put:.2f} | {before / MB:,.0f} MB | {peak / MB:,.0f} MB |"
        )


if __name__ == "__main__":
    main()
