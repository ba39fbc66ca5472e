"""Request ids and structured logs."""

from __future__ import annotations

import json
import logging
import re

import pytest
from fastapi.testclient import TestClient

from media_api import logs


def test_request_id_is_honoured_or_made(client: TestClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123.def:9"})
    assert given.headers["x-request-id"] == "abc-123.def:9"
    made = client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    for hostile in ("a b", "x" * 200, "id\r\nInjected: 1"):
        replaced = client.get("/healthz", headers={"X-Request-ID": hostile})
        assert replaced.headers["x-request-id"] != hostile
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


def test_one_structured_access_line_per_request(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="media_api.access"):
        client.get("/no/such/route", headers={"X-Request-ID": "trace-1"})
    (record,) = [r for r in caplog.records if r.name == "media_api.access"]
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request_id"] == "trace-1"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/no/such/route", 404)
    assert line["level"] == "info"
    assert line["duration_ms"] >= 0


def test_formatter_uses_the_current_request_id_and_keeps_exceptions() -> None:
    token = logs.request_id.set("ctx-7")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.getLogger("t").makeRecord(
                "t", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info=True
            )
            import sys

            record.exc_info = sys.exc_info()
        line = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.request_id.reset(token)
    assert (line["msg"], line["request_id"]) == ("failed x", "ctx-7")
    assert "ValueError: boom" in line["exc"]
