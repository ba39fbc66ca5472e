"""The OpenAPI document is the contract: schemathesis tries every route against it, over the
real stack (uvicorn on a socket, Postgres, Redis, SeaweedFS), and finds nothing.

Schemathesis runs as its own CLI process, for two reasons: the server under test runs in a
thread of this process, and hypothesis's generation would otherwise share one interpreter lock
(one core of two) with it; and the CLI is schemathesis's documented, stable interface (the
Python engine's events are internal), with the summary people know. Its exit status fails the
test; its summary is printed either way, its full output kept next to the HAR of every response.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from media_api.accounts.models import Owner
from media_api.errors import PROBLEM_JSON, PROBLEM_REF, PROBLEMS, declared_codes
from media_api.main import create_app
from media_api.resources import AppState
from media_api.settings import Settings
from media_api.storage.s3 import S3Store
from tests.support.callers import Caller, new_caller
from tests.support.serving import serve

README = Path(__file__).parents[2] / "README.md"
PUBLIC = {("POST", "/v1/auth/signup"), ("POST", "/v1/auth/token")}
# tus discovery: the same answer for everyone, from settings alone (no key, no database).
DISCOVERY = {("OPTIONS", "/v1/uploads/tus")}
# tus answers in headers: creation's 201 and HEAD's 200 have no body.
NO_BODY = {("POST", "/v1/uploads/tus", "201"), ("HEAD", "/v1/uploads/tus/{upload_id}", "200")}
# Success bodies other than JSON: the Prometheus text, and the events as Server-Sent Events
# for a client that asks for them (`Accept: text/event-stream`), a JSON page otherwise.
EXPECTED_TYPES = {
    ("GET", "/metrics"): ["text/plain"],
    ("GET", "/v1/events"): ["application/json", "text/event-stream"],
}

SEED = 14
CONFIG = Path(__file__).with_name("schemathesis.toml")
# The main run, every phase (coverage, fuzzing, stateful), is bounded by numbers of cases in
# tests/api/schemathesis.toml rather than by time, so that the seed makes the same requests on any
# machine, however fast (about a minute here, 2 cores). MEDIA_CONTRACT_SECONDS=600 explores for
# that long instead: fuzzing and stateful then repeat until the time is spent.
EXPLORE_SECONDS = os.environ.get("MEDIA_CONTRACT_SECONDS")
RATE_LIMITED_SECONDS = 10
TIMEOUT_SECONDS = 300 + int(EXPLORE_SECONDS or 0)


def schemathesis(base_url: str, token: str, out: Path, *options: str) -> Counter[int]:
    """`schemathesis run` against the served document; fails the test on any failure. Returns
    how many responses of each status it received."""
    out.mkdir(parents=True, exist_ok=True)
    har = out / "responses.har"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--seed",
        str(SEED),
        "--generation-database",
        "none",  # nothing remembered between runs: the seed decides
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "har",
        "--report-har-path",
        str(har),
        *options,
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
        env={
            **os.environ,
            "SCHEMATHESIS_TELEMETRY": "false",
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",  # tus bodies
            "PYTHONPATH": str(CONFIG.parent),
        },
        cwd=out,
    )
    (out / "schemathesis.txt").write_text(result.stdout + result.stderr)
    statuses = Counter(
        entry["response"]["status"] for entry in json.loads(har.read_text())["log"]["entries"]
    )
    # The summary, or on failure the failures too (each with a curl line to reproduce it).
    start = result.stdout.rfind("=" * 20 + " SUMMARY") if result.returncode == 0 else -30000
    print(result.stdout[start:], result.stderr[-5000:], sep="\n")
    print("statuses:", dict(sorted(statuses.items())), "\nfull output:", out / "schemathesis.txt")
    assert result.returncode == 0, "schemathesis found failures (output above)"
    return statuses


def forget(client: TestClient, store: S3Store, caller: Caller) -> None:
    """Remove the owner a run filled (its rows go with it) and its objects: the workers later
    tests start would otherwise process hundreds of its jobs."""

    async def remove() -> None:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        async with state.sessions() as session:
            await session.execute(delete(Owner).where(Owner.id == caller.owner_id))
            await session.commit()

    assert client.portal is not None
    client.portal.call(remove)
    for kind in ("originals", "variants"):
        store.delete_prefix(f"{kind}/{caller.owner_id}/")


@pytest.mark.slow
def test_schemathesis_finds_nothing(
    client: TestClient, live_server: str, store: S3Store, tmp_path: Path
) -> None:
    caller = new_caller(client)
    explore = ["--max-time", EXPLORE_SECONDS] if EXPLORE_SECONDS else []
    try:
        # Every check: tests/api/schemathesis.toml enables them all.
        statuses = schemathesis(live_server, caller.token, tmp_path, *explore)
    finally:
        forget(client, store, caller)
    assert statuses[201] > 0, "nothing was ever created: the run did not get far"


@pytest.mark.slow
def test_rate_limited_answers_are_declared(
    app_settings: Settings, store: S3Store, tmp_path: Path
) -> None:
    # Rates no other test uses: the counters live in the session's one Redis.
    limited = app_settings.model_copy(
        update={"rate_limit_requests_per_minute": 7, "rate_limit_auth_per_address": "2/minute"}
    )
    with TestClient(create_app(limited)) as client, serve(create_app(limited)) as url:
        caller = new_caller(client)
        try:
            statuses = schemathesis(
                url,
                caller.token,
                tmp_path,
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_headers_conformance,response_schema_conformance",
                "--phases",
                "fuzzing",
                "--max-time",
                str(RATE_LIMITED_SECONDS),
            )
        finally:
            forget(client, store, caller)
    assert statuses[429] > 0, "the limits never answered 429: this phase proved nothing"


# -- the document itself (fast: no server) --------------------------------------------------


@pytest.fixture(scope="module")
def document(app_settings: Settings) -> dict[str, Any]:
    return create_app(app_settings).openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def test_every_error_is_declared_as_problem_json(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert {"errors", "retry_after"} <= set(problem["properties"])
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)
            schema = response["content"][PROBLEM_JSON]["schema"]
            assert schema["allOf"][0] == {"$ref": PROBLEM_REF}
            codes = declared_codes(response)
            assert codes, (method, path, status)
            assert all(PROBLEMS[code].status_code == int(status) for code in codes)


def test_cross_cutting_answers_are_declared_on_every_route(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        if not path.startswith("/v1") or (method, path) in DISCOVERY:
            continue
        # Every /v1 route reads the database, and every one is rate-limited.
        assert "service-unavailable" in declared_codes(responses["503"]), (method, path)
        assert responses["503"]["headers"]["Retry-After"]["required"] is True
        assert "rate-limited" in declared_codes(responses["429"]), (method, path)
        assert responses["429"]["headers"]["Retry-After"]["required"] is True
        unauthorized = "invalid-credentials" if (method, path) in PUBLIC else "unauthorized"
        if (method, path) != ("POST", "/v1/auth/signup"):
            assert declared_codes(responses["401"]) == [unauthorized], (method, path)
            assert "WWW-Authenticate" in responses["401"]["headers"]
        if operation.get("parameters") or operation.get("requestBody"):
            assert "validation-error" in declared_codes(responses["422"]), (method, path)


def test_successes_declare_their_real_content_types(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            kinds = list(response.get("content", {}))
            if status in {"204", "307"} or (method, path, status) in NO_BODY:
                assert kinds == [], (method, path, status)
            elif int(status) < 400:
                expected = EXPECTED_TYPES.get((method, path), ["application/json"])
                assert kinds == expected, (method, path, status)
            if status == "307":
                assert "Location" in response["headers"]
    readyz = document["paths"]["/readyz"]["get"]["responses"]
    assert declared_codes(readyz["503"]) == ["not-ready"]


def test_readme_error_table_lists_every_declared_code(document: dict[str, Any]) -> None:
    rows = re.findall(r"^\| (\d{3}) \| `([a-z0-9-]+)` \|", README.read_text(), re.MULTILINE)
    documented = {(int(status), code) for status, code in rows}
    declared = {
        (int(status), code)
        for _, _, operation in operations(document)
        for status, response in operation["responses"].items()
        for code in declared_codes(response)
    }
    assert declared - documented == set(), "add these to the README's error table"
