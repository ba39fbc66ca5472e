"""Sign-in and sign-up under attack: throttled before any password work, the same work for
known and unknown emails, a closed sign-up, and the operator's commands (real Redis, real API)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from argon2 import extract_parameters
from fastapi.testclient import TestClient
from pydantic import ValidationError

from media_api.accounts import passwords
from media_api.accounts.throttles import create_throttle, parse_rates
from media_api.main import create_app
from media_api.resources import AppState
from media_api.settings import Settings
from tests.support.callers import new_caller
from tests.support.stack import settings_env

PASSWORD = "correct horse battery staple"


class CountingExecutor(ThreadPoolExecutor):
    """The password pool, recording what it was given to do."""

    def __init__(self) -> None:
        super().__init__(2, "counting-password-hash")
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self.lock:
            self.calls.append((fn, args))
        return super().submit(fn, *args, **kwargs)


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def fresh_limits(settings: Settings) -> None:
    """Counters start empty: every TestClient signs in from the same address."""
    url = settings.rate_limit_redis_url
    assert url is not None
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter("media-limits*"):
            client.delete(key)
    finally:
        client.close()


@contextmanager
def _limited(
    app_settings: Settings, **limits: str
) -> Iterator[tuple[TestClient, CountingExecutor]]:
    """The API with the given auth limits on, and its password pool counting submissions."""
    settings = app_settings.model_copy(update=limits)
    with TestClient(create_app(settings)) as client:
        state: AppState = client.app.state.media  # type: ignore[attr-defined]
        counting = CountingExecutor()
        state.hashing.shutdown()
        state.hashing = counting
        try:
            yield client, counting
        finally:
            counting.shutdown()


def _signup(client: TestClient, email: str) -> None:
    resp = client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert resp.status_code == 201, resp.text


def _login(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    return client.post("/v1/auth/token", data={"username": email, "password": password})


def _verifications(pool: CountingExecutor) -> list[tuple[Any, ...]]:
    return [args for fn, args in pool.calls if fn is passwords.verify_password]


@pytest.mark.usefixtures("fresh_limits")
def test_a_login_flood_is_refused_before_password_work_while_other_routes_answer(
    app_settings: Settings,
) -> None:
    limits = {"rate_limit_auth_per_address": "10/minute", "rate_limit_login_per_account": ""}
    # Redis answers slowly on a loaded machine: here no limit may fail open on a timeout.
    with _limited(app_settings, rate_limit_timeout_seconds=5.0, **limits) as (client, pool):
        owner = new_caller(client)
        email = _email()
        _signup(client, email)
        with ThreadPoolExecutor(20) as flood:
            answers = list(flood.map(lambda _: _login(client, email, "wrong password!"), range(40)))
            listing = client.get("/v1/images?limit=1", headers=owner.headers)
        statuses = [a.status_code for a in answers]
        # The signup took one slot of the address's ten; nine logins reached the hasher.
        assert statuses.count(401) == 9
        assert statuses.count(429) == 31
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["code"] == "rate-limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert len(_verifications(pool)) == 9  # the refused ones cost no hashing at all
        assert listing.status_code == 200  # authenticated routes are not part of the budget


@pytest.mark.usefixtures("fresh_limits")
def test_known_and_unknown_emails_cost_the_same_password_work(app_settings: Settings) -> None:
    with _limited(app_settings) as (client, pool):
        email = _email()
        _signup(client, email)
        pool.calls.clear()
        known, unknown = _login(client, email, "wrong password!"), _login(client, _email())
        assert known.status_code == unknown.status_code == 401
        assert known.json() == unknown.json()
        (known_args, unknown_args) = _verifications(pool)
        # The unknown email is verified too, against a dummy hash of the same cost.
        assert known_args[1] is not None
        assert unknown_args[1] is None
        assert extract_parameters(known_args[1]) == extract_parameters(passwords._DUMMY_HASH)
        assert not passwords.verify_password(PASSWORD, None)


@pytest.mark.usefixtures("fresh_limits")
def test_failed_logins_back_off_per_account_even_with_the_right_password(
    app_settings: Settings,
) -> None:
    limits = {
        "rate_limit_auth_per_address": "100/minute",
        "rate_limit_login_failures_per_account": "3/minute;5/hour",
    }
    with _limited(app_settings, **limits) as (client, pool):
        victim, other = _email(), _email()
        for email in (victim, other):
            _signup(client, email)
        assert [_login(client, victim, "guess").status_code for _ in range(3)] == [401] * 3
        pool.calls.clear()
        blocked = _login(client, victim.upper())  # the right password, any spelling
        assert blocked.status_code == 429
        assert "failed sign-ins" in blocked.json()["detail"]
        assert _verifications(pool) == []
        assert _login(client, other).status_code == 200  # another account is untouched
        # Unknown emails back off the same way, so the answers reveal nothing.
        ghost = _email()
        assert [_login(client, ghost).status_code for _ in range(4)] == [401, 401, 401, 429]


@pytest.mark.usefixtures("fresh_limits")
def test_attempts_per_account_and_signups_per_address_are_limited(app_settings: Settings) -> None:
    limits = {"rate_limit_auth_per_address": "3/minute", "rate_limit_login_per_account": ""}
    with _limited(app_settings, **limits) as (client, _):
        answers = [
            client.post("/v1/auth/signup", json={"email": _email(), "password": PASSWORD})
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
    limits = {"rate_limit_auth_per_address": "", "rate_limit_login_per_account": "2/minute"}
    with _limited(app_settings, **limits) as (client, _):
        email = _email()
        _signup(client, email)
        assert [_login(client, email).status_code for _ in range(3)] == [200, 200, 429]


def test_rates_are_checked_at_startup() -> None:
    assert [str(r) for r in parse_rates("10/minute;100/hour")] == [
        "10 per 1 minute",
        "100 per 1 hour",
    ]
    assert parse_rates("") == []
    with pytest.raises(ValidationError, match="not a rate limit"):
        Settings(rate_limit_auth_per_address="ten a minute")


def test_signup_can_be_closed(app_settings: Settings) -> None:
    closed = app_settings.model_copy(update={"signup": "closed"})
    with TestClient(create_app(closed)) as client:
        resp = client.post("/v1/auth/signup", json={"email": _email(), "password": PASSWORD})
        assert resp.status_code == 403
        assert resp.json()["code"] == "signup-closed"
        assert resp.headers["content-type"] == "application/problem+json"


def _cli(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "media_api.cli", *args],
        env=settings_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_operator_creates_users_and_keys_when_signup_is_closed(app_settings: Settings) -> None:
    email = _email()
    made = _cli(app_settings, "create-user", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert uuid.UUID(made.stdout.strip())
    assert (
        _cli(app_settings, "create-user", email, "--password-stdin", stdin=PASSWORD).returncode == 1
    )
    short = _cli(app_settings, "create-user", _email(), "--password-stdin", stdin="short\n")
    assert short.returncode == 1
    assert "refused" in short.stderr

    # A key is not slipped onto an account that has a password unless that is meant.
    refused = _cli(app_settings, "create-key", email)
    assert refused.returncode == 1
    assert "--existing" in refused.stderr
    granted = _cli(app_settings, "create-key", email, "--existing")
    assert granted.returncode == 0, granted.stderr
    key = granted.stdout.strip()

    closed = app_settings.model_copy(update={"signup": "closed"})
    with TestClient(create_app(closed)) as client:
        assert _login(client, email).status_code == 200
        me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200
        assert me.json()["email"] == email


def test_throttle_fails_open_when_redis_is_unreachable() -> None:
    errors: list[int] = []
    throttle = create_throttle("redis://127.0.0.1:1/0", lambda: errors.append(1))

    async def run() -> list[int | None]:
        try:
            return [await throttle.hit("k", parse_rates("1/minute")) for _ in range(3)]
        finally:
            await throttle.close()

    assert asyncio.run(run()) == [None, None, None]  # let through, not refused, not raised
    assert len(errors) == 3
