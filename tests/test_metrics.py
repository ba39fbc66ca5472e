"""GET /metrics: upload outcomes, bytes, signed URLs, job counts and queue depths, in Prometheus
format."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from media_api.dev.stack import free_port
from media_api.images.multipart import FORM_OVERHEAD_BYTES
from media_api.jobs.contract import QUEUES
from media_api.jobs.producer import create_producer, queue_depths
from media_api.main import create_app
from media_api.settings import Settings
from tests.support.callers import Caller, new_caller, upload
from tests.support.images import png
from tests.support.metrics import Samples, metric_samples

# A task name no worker knows: the messages only have to sit in the queue.
PROBE_TASK = "media.metrics-probe"


def _post(client: TestClient, caller: Caller, data: bytes) -> tuple[int, int]:
    """POST one file; returns the status and the size of the request body that was sent."""
    request = client.build_request(
        "POST", "/v1/images", headers=caller.headers, files={"file": ("f.png", data, "image/png")}
    )
    return client.send(request).status_code, len(request.read())


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _scrape(client: TestClient) -> Samples:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return metric_samples(resp.text)


def _purge(settings: Settings, queue: str) -> None:
    producer = create_producer(settings)
    try:
        with producer.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)
    finally:
        producer.close()


def test_metrics_count_what_happened(app_settings: Settings) -> None:
    limit = 256 * 1024
    with TestClient(create_app(app_settings.model_copy(update={"max_upload_bytes": limit}))) as c:
        caller = new_caller(c)
        image = png(size=(40, 30))
        created, created_size = _post(c, caller, image)
        duplicate, duplicate_size = _post(c, caller, image)
        rejected, rejected_size = _post(c, caller, b"%PDF-1.7 not an image" * 1000)
        # Refused on its declared length alone: counted as an upload, its body never read.
        too_large, _ = _post(c, caller, b"\0" * (limit + FORM_OVERHEAD_BYTES + 1))
        assert (created, duplicate, rejected, too_large) == (201, 200, 415, 413)
        samples = _scrape(c)

    assert _value(samples, "media_uploads_total", outcome="created", code="") == 1
    assert _value(samples, "media_uploads_total", outcome="duplicate", code="") == 1
    rejections = {
        code: _value(samples, "media_uploads_total", outcome="rejected", code=code)
        for code in ("unsupported-media-type", "file-too-large")
    }
    assert rejections == {"unsupported-media-type": 1, "file-too-large": 1}
    assert _value(samples, "media_upload_bytes_total") == len(image)  # stored originals only
    received = _value(samples, "media_upload_received_bytes_total")
    assert received == created_size + duplicate_size + rejected_size
    assert _value(samples, "media_upload_seconds_count") == 3
    assert _value(samples, "media_signed_urls_total") >= 2  # one original URL per success
    assert _value(samples, "media_jobs", kind="thumbnails", state="pending") >= 1


def test_queue_depth_is_read_from_the_broker(client: TestClient, app_settings: Settings) -> None:
    # Nothing consumes `thumbnails` in this session (the session worker reads `maintenance`).
    _purge(app_settings, "thumbnails")
    before = _scrape(client)
    reported = {dict(labels)["queue"] for name, labels in before if name == "media_queue_depth"}
    assert reported == set(QUEUES)
    assert _value(before, "media_queue_depth", queue="thumbnails") == 0
    assert _value(before, "media_broker_up") == 1
    assert _value(before, "media_database_up") == 1

    producer = create_producer(app_settings)
    try:
        for _ in range(3):
            producer.send_task(PROBE_TASK, queue="thumbnails")
        assert _value(_scrape(client), "media_queue_depth", queue="thumbnails") == 3
        # A queue the broker never saw counts 0, and does not spoil the queues read after it.
        unknown = f"never-declared-{uuid.uuid4().hex[:8]}"
        depths = queue_depths(producer, [unknown, "thumbnails"], timeout=2)
        assert depths == {unknown: 0, "thumbnails": 3}
    finally:
        producer.close()
        _purge(app_settings, "thumbnails")
    assert _value(_scrape(client), "media_queue_depth", queue="thumbnails") == 0


def test_a_database_outage_leaves_the_rest_of_the_metrics(app_settings: Settings) -> None:
    dead = app_settings.model_copy(
        update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/media"}
    )
    with TestClient(create_app(dead)) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 200
    samples = metric_samples(resp.text)
    assert _value(samples, "media_database_up") == 0
    assert _value(samples, "media_broker_up") == 1
    assert not [key for key in samples if key[0] == "media_jobs"]  # no stale numbers


def test_a_broker_outage_leaves_the_rest_of_the_metrics(app_settings: Settings) -> None:
    dead = app_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as client:
        caller = new_caller(client)
        assert (
            upload(client, caller, png(size=(40, 30)))[0] == 201
        )  # accepted; its jobs wait in Postgres
        samples = _scrape(client)
    assert _value(samples, "media_broker_up") == 0
    assert not [key for key in samples if key[0] == "media_queue_depth"]  # no stale numbers
    assert _value(samples, "media_jobs", kind="thumbnails", state="pending") >= 1
    assert _value(samples, "media_uploads_total", outcome="created", code="") == 1
