"""`media-api serve --workers N`: a scrape of /metrics reaches one of N processes and reports the
whole server, the counters of every process summed and the scrape-time gauges once.

The processes share their counters through prometheus_client's multiprocess files, in a private
directory under $TMPDIR (here the test's own) that exists while `serve` runs. Those files, one
set per process, also show which processes counted the uploads.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from media_api.metrics import DIR_PREFIX
from media_api.settings import Settings
from tests.support.callers import Caller, new_caller, post_image
from tests.support.images import png
from tests.support.metrics import metric_samples
from tests.support.serving import ServeProcess, serve_workers
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

WORKERS = 2
# Uploads land on whichever process accepts the connection first: enough tries that both do.
MAX_UPLOADS = 60
SCRAPES = 12
CREATED = (("code", ""), ("outcome", "created"))


@dataclass
class Server(ServeProcess):
    """A `media-api serve --workers 2` process and the folder its metrics files go to."""

    tmp: Path

    def metrics_dirs(self) -> list[Path]:
        return list(self.tmp.glob(f"{DIR_PREFIX}*"))

    @property
    def metrics_dir(self) -> Path:
        (folder,) = self.metrics_dirs()
        return folder

    def pids(self) -> set[int]:
        """Server processes that have written metrics files (each does as its app starts),
        the dead ones included."""
        return {int(path.stem.rpartition("_")[2]) for path in self.metrics_dir.glob("*.db")}

    def live_pids(self) -> set[int]:
        return {pid for pid in self.pids() if psutil.pid_exists(pid)}


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    with serve_workers(settings, tmp_path, WORKERS) as (started, tmp):
        server = Server(started.proc, started.port, started.log, tmp)

        def all_started() -> bool:
            assert started.proc.poll() is None, f"serve exited: {started.log_tail()}"
            return len(server.metrics_dirs()) == 1 and len(server.pids()) == WORKERS

        wait_for(all_started, "both server processes to start", timeout=60)
        yield server


def _upload(server: Server, caller: Caller, data: bytes) -> None:
    """POST one image over a connection of its own (httpx.post opens one per call), so that
    either process may accept it."""
    resp = post_image(server.url, caller, data)
    assert resp.status_code == 201, resp.text


def _created_by_pid(folder: Path) -> dict[int, float]:
    """media_uploads_total{outcome="created"} as each process's own file holds it."""
    found: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            _, name, labels, _ = json.loads(key)
            if name == "media_uploads_total" and labels == dict(CREATED):
                found[pid] = value
    return found


def _upload_until_every_process_counted(
    server: Server, caller: Caller, first: int = 0, at_least: int = 6
) -> int:
    """Upload until every current server process has counted a new one; returns how many."""
    before = _created_by_pid(server.metrics_dir)
    pids = server.live_pids()
    n = 0
    while n < at_least or any(
        _created_by_pid(server.metrics_dir).get(pid, 0) <= before.get(pid, 0) for pid in pids
    ):
        assert n < MAX_UPLOADS, f"uploads by process: {_created_by_pid(server.metrics_dir)}"
        _upload(server, caller, png(first + n, (40, 30)))
        n += 1
    return n


def _scrape(server: Server) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], int]]:
    """The text of one scrape (on a connection of its own) and how often each series is in it."""
    resp = httpx.get(f"{server.url}/metrics", timeout=30)
    assert resp.status_code == 200
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = collections.Counter()
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            seen[(sample.name, tuple(sorted(sample.labels.items())))] += 1
    return resp.text, seen


def _gauges(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, object]:
    names = ("media_jobs", "media_queue_depth", "media_database_up", "media_broker_up")
    return {f"{name}{dict(labels)}": v for (name, labels), v in samples.items() if name in names}


def test_every_scrape_reports_the_uploads_of_every_process(
    server: Server, client: TestClient
) -> None:
    caller = new_caller(client)
    uploads = _upload_until_every_process_counted(server, caller)
    by_pid = _created_by_pid(server.metrics_dir)
    assert len(server.pids()) == WORKERS
    assert set(by_pid) == server.pids(), by_pid  # both took a share
    assert sum(by_pid.values()) == uploads

    # The same fleet-wide numbers, as one process reads them (nothing consumes these queues).
    expected_gauges = _gauges(metric_samples(client.get("/metrics").text))
    for _ in range(SCRAPES):
        text, seen = _scrape(server)
        samples = metric_samples(text)
        assert samples[("media_uploads_total", CREATED)] == uploads
        assert samples[("media_upload_seconds_count", ())] == uploads
        assert samples[("media_upload_bytes_total", ())] == sum(
            len(png(n, (40, 30))) for n in range(uploads)
        )
        # Each series once, and none split by process.
        assert [key for key, times in seen.items() if times > 1] == []
        assert [key for key in seen if "pid" in dict(key[1])] == []
        assert _gauges(samples) == expected_gauges
        assert samples[("media_jobs", (("kind", "thumbnails"), ("state", "pending")))] >= uploads

    folder = server.metrics_dir
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0, server.log_tail()
    assert not folder.exists()
    assert server.metrics_dirs() == []
    # The worker processes log as the CLI configured it (they are fresh interpreters): one
    # JSON access line per upload.
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line[:1] == "{"]
    posts = [e for e in lines if e.get("logger") == "media_api.access" and "POST" in e["msg"]]
    assert len(posts) == uploads


def test_the_counts_of_a_process_that_died_stay_in_the_sum_once(
    server: Server, client: TestClient
) -> None:
    caller = new_caller(client)
    uploads = _upload_until_every_process_counted(server, caller)
    first_pids = server.pids()
    victim = max(first_pids)

    os.kill(victim, signal.SIGKILL)  # as the OOM killer would; uvicorn starts a replacement
    wait_for(lambda: len(server.pids() - first_pids) == 1, "a replacement process", timeout=60)
    assert server.live_pids() == server.pids() - {victim}
    # The replacement and the survivor each count some more.
    uploads += _upload_until_every_process_counted(server, caller, first=uploads)
    by_pid = _created_by_pid(server.metrics_dir)
    assert set(by_pid) == server.pids(), by_pid  # the dead one's file among them

    for _ in range(SCRAPES):
        text, seen = _scrape(server)
        # The dead process's uploads are still in the sum, and nobody's twice.
        assert metric_samples(text)[("media_uploads_total", CREATED)] == uploads
        assert [key for key, times in seen.items() if times > 1] == []
