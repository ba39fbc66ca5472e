"""Signup, the OAuth2 password flow, access tokens and API keys over the real API."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from fastapi.testclient import TestClient

from media_api.accounts.passwords import hash_password, verify_password
from media_api.accounts.tokens import issue_access_token, owner_from_access_token
from media_api.settings import Settings
from tests.support.callers import new_caller

PASSWORD = "correct horse battery staple"


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def _token(client: TestClient, email: str, password: str = PASSWORD) -> str:
    resp = client.post("/v1/auth/token", data={"username": email, "password": password})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    return str(body["access_token"])


def test_signup_then_token_then_authenticated_call(client: TestClient) -> None:
    email = _email()
    resp = client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    assert resp.json()["email"] == email
    assert "password" not in resp.text
    token = _token(client, email.upper())  # emails are case-insensitive
    listed = client.get("/v1/api-keys", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200
    assert listed.json() == {"items": []}
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == resp.json()  # who the token belongs to, as signup described it
    key = client.post(
        "/v1/api-keys", headers={"Authorization": f"Bearer {token}"}, json={"name": "k"}
    ).json()["key"]
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {key}"}).json() == me.json()


def test_duplicate_email_is_409(client: TestClient) -> None:
    email = _email()
    assert (
        client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code
        == 201
    )
    again = client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD + "x"})
    assert again.status_code == 409
    assert again.json()["code"] == "email-taken"


@pytest.mark.parametrize(
    "body",
    [{"email": "not-an-email", "password": PASSWORD}, {"email": "a@b.co", "password": "short"}],
)
def test_signup_validates_input(client: TestClient, body: dict[str, str]) -> None:
    resp = client.post("/v1/auth/signup", json=body)
    assert resp.status_code == 422
    assert resp.json()["code"] == "validation-error"


def test_wrong_password_and_unknown_email_answer_the_same(client: TestClient) -> None:
    email = _email()
    client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    wrong = client.post("/v1/auth/token", data={"username": email, "password": "nope-nope-nope"})
    unknown = client.post("/v1/auth/token", data={"username": _email(), "password": PASSWORD})
    for resp in (wrong, unknown):
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["code"] == "invalid-credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_passwords_are_stored_as_argon2id() -> None:
    encoded = hash_password(PASSWORD)
    assert encoded.startswith("$argon2id$")
    assert PASSWORD not in encoded
    assert verify_password(PASSWORD, encoded)
    assert not verify_password(PASSWORD + "!", encoded)
    assert not verify_password(PASSWORD, None)


def test_expired_forged_and_garbage_tokens_are_refused(
    client: TestClient, app_settings: Settings
) -> None:
    email = _email()
    client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    token = _token(client, email)
    secret = app_settings.jwt_secret
    owner = owner_from_access_token(token, secret)
    assert owner is not None
    expired = jwt.encode(
        {"sub": str(owner), "iss": "media-service", "iat": 1, "exp": int(time.time()) - 5},
        secret,
        algorithm="HS256",
    )
    forged = issue_access_token(owner, "another-secret-that-is-long-enough-" * 2, 600)
    unsigned = jwt.encode({"sub": str(owner), "iss": "media-service"}, key=None, algorithm="none")
    for bad in (expired, forged, unsigned, token[:-2] + "xx", "garbage"):
        resp = client.get("/v1/api-keys", headers={"Authorization": f"Bearer {bad}"})
        assert resp.status_code == 401, bad
        assert resp.json()["code"] == "unauthorized"
    assert (
        client.get("/v1/api-keys", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )


def test_api_key_lifecycle(client: TestClient) -> None:
    caller = new_caller(client)
    created = client.post("/v1/api-keys", headers=caller.headers, json={"name": "ci"})
    assert created.status_code == 201
    body = created.json()
    key = body["key"]
    assert key.startswith(f"mk_{body['prefix']}_")
    listed = client.get("/v1/api-keys", headers=caller.headers).json()["items"]
    assert body["id"] in {item["id"] for item in listed}
    assert all("key" not in item for item in listed)  # the secret is shown once
    new_headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/api-keys", headers=new_headers).status_code == 200
    assert client.delete(f"/v1/api-keys/{body['id']}", headers=caller.headers).status_code == 204
    assert client.get("/v1/api-keys", headers=new_headers).status_code == 401
    assert client.delete(f"/v1/api-keys/{body['id']}", headers=caller.headers).status_code == 404


def test_weak_or_missing_secret_key_refuses_to_start(app_settings: Settings) -> None:
    from pydantic import SecretStr, ValidationError

    from media_api.main import create_app

    with pytest.raises(RuntimeError, match="MEDIA_SECRET_KEY"):
        create_app(app_settings.model_copy(update={"secret_key": None}))
    for weak in ("short", "a" * 64, "changeme"):
        with pytest.raises(ValidationError, match="too weak"):
            Settings(secret_key=SecretStr(weak))


def test_a_locked_key_row_does_not_block_requests(
    client: TestClient, app_settings: Settings
) -> None:
    """Recording key use never waits for another transaction holding the key's row (a long
    upload with the same key, say): it skips the bookkeeping instead."""
    import threading

    import psycopg

    caller = new_caller(client)
    prefix = caller.token.split("_")[1]
    url = app_settings.require("database_url")
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("UPDATE api_keys SET last_used_at = NULL WHERE prefix = %s", (prefix,))
    with psycopg.connect(url) as holder:
        holder.execute("SELECT id FROM api_keys WHERE prefix = %s FOR UPDATE", (prefix,))
        # Safety net only: had the request waited for the lock, this would let it finish late,
        # and the row would then show the touch.
        release = threading.Timer(15, holder.rollback)
        release.start()
        try:
            assert client.get("/v1/api-keys", headers=caller.headers).status_code == 200
            with psycopg.connect(url, autocommit=True) as probe:
                row = probe.execute(
                    "SELECT last_used_at FROM api_keys WHERE prefix = %s", (prefix,)
                ).fetchone()
            assert row == (None,)  # skipped, not waited for
        finally:
            release.cancel()
            holder.rollback()
