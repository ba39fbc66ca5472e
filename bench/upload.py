"""Upload throughput and server memory against file size.

Run: .venv/bin/python -m bench.upload [--sizes 1,20,100,200] [--repeat 3]

For each size the same bytes go six ways: loopback (a discarding socket), s3 put (boto3
multipart to the same SeaweedFS), api (POST /v1/images, decoded as it arrives), api after (the
same through a second API process with MEDIA_FOLLOW_UPLOADS=false: decoded after the last
byte), tus (8 MiB PATCHes) and direct (presigned PUTs, then complete), with the API's peak RSS
sampled every 5 ms; each path has an untimed warm-up. Then a tus upload cut at 50 % is resumed
and the bytes sent twice counted.
Method: docs/benchmarks.md ("Upload throughput").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
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


def anon_rss(proc: psutil.Process) -> int:
    """Resident anonymous memory (`RssAnon`): what the process allocated. File pages it maps
    (the spool the JPEG scan walk reads through mmap) are the page cache's, dropped under
    pressure, and left out."""
    try:
        with open(f"/proc/{proc.pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):  # a child that just ended
        pass
    return 0


class RssSampler:
    """Peak anonymous RSS of a process while active, and apart of it that of its children (the
    validation processes, whose decode grows with the image, not with the upload path)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.children_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return anon_rss(self.proc)

    def children_rss(self) -> int:
        return sum(anon_rss(p) for p in self.proc.children(recursive=True))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self.children_peak = max(self.children_peak, self.children_rss())
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def api_seconds(
    http: httpx.Client, base: str, token: str, path: Path, sampler_pid: int
) -> tuple[float, int, int, int]:
    """Upload through the API; returns seconds, the API process's RSS before and its peak
    during, and the validation processes' peak."""
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
    return elapsed, before, sampler.peak, sampler.children_peak


TUS_CHUNK = 8 * MB


def _tus_headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", **extra}


def _tus_patch(
    http: httpx.Client, url: str, token: str, offset: int, data: bytes
) -> httpx.Response:
    headers = _tus_headers(
        token, **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    )
    return http.patch(url, headers=headers, content=data)


def tus_upload(http: httpx.Client, base: str, token: str, path: Path, start: int = 0) -> str:
    """Create a tus upload of the file and send it from `start` in 8 MiB PATCHes (as
    tus-js-client does in the web page); returns its URL. `start` > 0 resumes `url`."""
    size = path.stat().st_size
    created = http.post(
        f"{base}/v1/uploads/tus", headers=_tus_headers(token, **{"Upload-Length": str(size)})
    )
    if created.status_code != 201:
        raise RuntimeError(f"tus creation failed: {created.status_code} {created.text}")
    url = created.headers["Location"]
    _tus_send(http, url, token, path, 0)
    return url


def _tus_send(http: httpx.Client, url: str, token: str, path: Path, offset: int) -> int:
    """PATCH the file from `offset` to its end; the bytes sent."""
    sent = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        while data := fh.read(TUS_CHUNK):
            resp = _tus_patch(http, url, token, offset, data)
            if resp.status_code != 204:
                raise RuntimeError(f"tus PATCH failed: {resp.status_code} {resp.text}")
            offset += len(data)
            sent += len(data)
    return sent


def direct_upload(http: httpx.Client, base: str, token: str, path: Path) -> None:
    """POST /v1/uploads, PUT the bytes to the presigned URL(s) one part at a time, complete."""
    size = path.stat().st_size
    auth = {"Authorization": f"Bearer {token}"}
    offer = http.post(
        f"{base}/v1/uploads", headers=auth, json={"filename": path.name, "size": size}
    )
    if offer.status_code != 201:
        raise RuntimeError(f"direct creation failed: {offer.status_code} {offer.text}")
    body = offer.json()
    parts = []
    with path.open("rb") as fh:
        if "url" in body:
            http.put(body["url"], content=fh.read()).raise_for_status()
        else:
            for part in body["parts"]:
                put = http.put(part["url"], content=fh.read(body["part_size"]))
                put.raise_for_status()
                parts.append({"number": part["number"], "etag": put.headers["ETag"]})
    complete = http.post(
        f"{base}/v1/uploads/{body['id']}/complete", headers=auth, json={"parts": parts}
    )
    if complete.status_code != 201:
        raise RuntimeError(f"complete failed: {complete.status_code} {complete.text}")


def timed_with_rss(pid: int, work: Callable[[], object]) -> tuple[float, int, int]:
    """Seconds `work` took, the API process's peak RSS meanwhile and its children's."""
    sampler = RssSampler(pid)
    with sampler:
        start = time.perf_counter()
        work()
        elapsed = time.perf_counter() - start
    return elapsed, sampler.peak, sampler.children_peak


def resent_after_cut(http: httpx.Client, base: str, token: str, path: Path) -> int:
    """A tus upload whose connection drops at 50 % (mid-chunk), resumed as a client does
    (HEAD, then PATCH from the offset answered): the bytes sent twice."""
    size = path.stat().st_size
    created = http.post(
        f"{base}/v1/uploads/tus", headers=_tus_headers(token, **{"Upload-Length": str(size)})
    )
    url = created.headers["Location"]
    half = size // 2
    sent = 0
    with path.open("rb") as fh:
        while sent + TUS_CHUNK <= half:  # whole chunks before the one that is cut
            data = fh.read(TUS_CHUNK)
            _tus_patch(http, url, token, sent, data).raise_for_status()
            sent += len(data)
        cut_chunk = fh.read(TUS_CHUNK)
    _cut_patch(url, token, sent, cut_chunk, half - sent)
    sent = half
    # HEAD waits for the request that held the upload to store what came and let go.
    offset = int(http.head(url, headers=_tus_headers(token)).headers["Upload-Offset"])
    sent += _tus_send(http, url, token, path, offset)
    return sent - size


def _cut_patch(url: str, token: str, offset: int, chunk: bytes, keep: int) -> None:
    """A PATCH announcing `chunk` whose connection closes after `keep` bytes of it."""
    target = httpx.URL(url)
    assert target.port is not None
    with socket.create_connection((target.host, target.port)) as sock:
        head = (
            f"PATCH {target.path} HTTP/1.1\r\nHost: {target.host}\r\n"
            f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
            f"Content-Length: {len(chunk)}\r\n\r\n"
        )
        sock.sendall(head.encode() + chunk[:keep])
        time.sleep(0.5)  # the bytes reach the server before the connection goes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,20,100,200", help="file sizes in MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rows: list[tuple[int, dict[str, float], int, dict[str, int]]] = []
    # A 200 MB noise JPEG is 51 MP, just over the default 50 MP cap: the bench raises both caps.
    with bench_stack(MEDIA_MAX_UPLOAD_BYTES=str(256 * MB), MEDIA_MAX_PIXELS="60000000") as stack:
        work = stack.data_dir / "files"
        work.mkdir()
        store = S3Store(stack.settings)
        after_last_byte = dataclasses.replace(
            stack, env={**stack.env, "MEDIA_FOLLOW_UPLOADS": "false"}
        )
        with (
            api_process(stack) as (base, proc),
            api_process(after_last_byte) as (base_after, proc_after),
            httpx.Client(timeout=300) as http,
            contextlib.closing(store),
        ):
            warm_up = work / "warm-up.jpg"
            make_jpeg(MB, warm_up)
            loopback_seconds(warm_up)
            s3_put_seconds(store, warm_up)
            api_seconds(http, base, stack.token, warm_up, proc.pid)
            make_jpeg(MB, warm_up)
            api_seconds(http, base_after, stack.token, warm_up, proc_after.pid)
            for warm_up_path in (tus_upload, direct_upload):  # new bytes each: no duplicate
                make_jpeg(MB, warm_up)
                warm_up_path(http, base, stack.token, warm_up)
            warm_up.unlink()
            for size_mb in sizes:
                runs: dict[str, list[float]] = {
                    k: [] for k in ("loop", "put", "api", "after", "tus", "direct")
                }
                befores, peaks = [], {"api": 0, "tus": 0, "direct": 0, "decode": 0}
                for i in range(args.repeat):
                    path = work / f"{size_mb}mb-{i}.jpg"
                    nbytes = make_jpeg(size_mb * MB, path)
                    runs["loop"].append(nbytes / loopback_seconds(path))
                    runs["put"].append(nbytes / s3_put_seconds(store, path))
                    seconds, before, peak, decode = api_seconds(
                        http, base, stack.token, path, proc.pid
                    )
                    runs["api"].append(nbytes / seconds)
                    befores.append(before)
                    peaks["api"] = max(peaks["api"], peak)
                    peaks["decode"] = max(peaks["decode"], decode)
                    # Each path its own bytes: the same bytes again would be a duplicate.
                    distinct = work / f"after-{size_mb}mb-{i}.jpg"
                    make_jpeg(size_mb * MB, distinct)
                    seconds, _, _, _ = api_seconds(
                        http, base_after, stack.token, distinct, proc_after.pid
                    )
                    runs["after"].append(distinct.stat().st_size / seconds)
                    distinct.unlink()
                    for name, upload in (("tus", tus_upload), ("direct", direct_upload)):
                        distinct = work / f"{name}-{size_mb}mb-{i}.jpg"
                        make_jpeg(size_mb * MB, distinct)
                        send = functools.partial(upload, http, base, stack.token, distinct)
                        seconds, peak, decode = timed_with_rss(proc.pid, send)
                        runs[name].append(distinct.stat().st_size / seconds)
                        peaks[name] = max(peaks[name], peak)
                        peaks["decode"] = max(peaks["decode"], decode)
                        distinct.unlink()
                    path.unlink()
                medians = {name: statistics.median(values) for name, values in runs.items()}
                rows.append((size_mb, medians, max(befores), peaks))
            cut_file = work / "cut.jpg"
            make_jpeg(max(sizes) * MB, cut_file)
            resent = resent_after_cut(http, base, stack.token, cut_file)

    print(
        "| file | loopback MB/s | S3 PUT MB/s | POST MB/s | tus MB/s | direct MB/s "
        "| POST / PUT | POST, decoded after the last byte / PUT | tus / PUT | direct / PUT "
        "| API RssAnon before | API peak RssAnon POST / tus / direct "
        "| validation processes' peak RssAnon |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size_mb, m, before, peak_rss in rows:
        print(
            f"| {size_mb} MB | {m['loop'] / MB:,.0f} | {m['put'] / MB:,.0f} | {m['api'] / MB:,.0f} "
            f"| {m['tus'] / MB:,.0f} | {m['direct'] / MB:,.0f} | {m['api'] / m['put']:.2f} "
            f"| {m['after'] / m['put']:.2f} | {m['tus'] / m['put']:.2f} "
            f"| {m['direct'] / m['put']:.2f} | {before / MB:,.0f} MB "
            f"| {peak_rss['api'] / MB:,.0f} / {peak_rss['tus'] / MB:,.0f} "
            f"/ {peak_rss['direct'] / MB:,.0f} MB | {peak_rss['decode'] / MB:,.0f} MB |"
        )
    print(
        f"\ntus cut at 50 % of {max(sizes)} MB and resumed: {resent:,} bytes sent twice "
        f"({resent / TUS_CHUNK:.2f} of an 8 MiB chunk)"
    )


if __name__ == "__main__":
    main()
