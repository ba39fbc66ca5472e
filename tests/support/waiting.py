"""Waiting for something to happen: one polling loop, with a deadline and a clear failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from fastapi.testclient import TestClient

from tests.support.callers import Caller, job_states

T = TypeVar("T")


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    what: str,
    timeout: float = 30,
    interval: float = 0.05,
) -> T:
    """Call `fetch` until `done` holds for what it returns, and return that; fail naming
    `what` and the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} (last: {value!r})")
        time.sleep(interval)


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = 30, interval: float = 0.05
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    poll(condition, bool, what, timeout, interval)


def wait_for_status(
    client: TestClient, caller: Caller, image_id: str, status: str, timeout: float = 60
) -> dict[str, object]:
    """Poll the image until it reaches `status`; returns its last JSON."""

    def image() -> dict[str, object]:
        body: dict[str, object] = client.get(
            f"/v1/images/{image_id}", headers=caller.headers
        ).json()
        return body

    return poll(
        image,
        lambda body: body.get("status") == status,
        f"{image_id} to be {status}",
        timeout,
        interval=0.2,
    )


def job_leaves(
    client: TestClient, caller: Caller, image_id: str, kind: str, state: str, timeout: float = 60
) -> str:
    """Poll the image's `kind` job until it is no longer in `state`; returns its new state."""

    def current() -> str:
        body = client.get(f"/v1/images/{image_id}", headers=caller.headers).json()
        return job_states(body)[kind]

    return poll(
        current,
        lambda now: now != state,
        f"the {kind} job to leave {state}",
        timeout,
        interval=0.02,
    )
