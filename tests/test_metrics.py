"""GET /metrics: upload outcomes, bytes, signed URLs and job counts, in Prometheus format."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from media_api.main import create_app
from media_api.settings import Settings
from tests.helpers import new_caller, upload


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_what_happened(app_settings: Settings) -> None:
    with TestClient(create_app(app_settings)) as client:
        caller = new_caller(client)
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, "PNG")
        png = buf.getvalue()
        assert upload(client, caller, png)[0] == 201
        assert upload(client, caller, png)[0] == 200
        assert upload(client, caller, b"%PDF-1.7 not an image")[0] == 415

        resp = client.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        samples = _samples(resp.text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("media_uploads_total", outcome="created", code="") == 1
    assert value("media_uploads_total", outcome="duplicate", code="") == 1
    assert value("media_uploads_total", outcome="rejected", code="unsupported-media-type") == 1
    assert value("media_upload_bytes_total") == len(png)
    assert value("media_upload_seconds_count") == 3
    assert value("media_signed_urls_total") >= 2  # one original URL per successful response
    assert value("media_jobs", kind="thumbnails", state="pending") >= 1
