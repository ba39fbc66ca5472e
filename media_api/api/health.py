"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy import text

from media_api.api.deps import StateDep
from media_api.errors import RETRY_AFTER_HEADER, MediaError, NotFound, problem, problem_responses
from media_api.jobs import repository as jobs_repository
from media_api.jobs.contract import QUEUES
from media_api.jobs.producer import check_broker, queue_depths
from media_api.metrics import ScrapeReadings
from media_api.resources import AppState

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

# A probe that failed says so for this long: about the readiness timeout plus a margin.
NOT_READY_RETRY_AFTER_SECONDS = 5


class NotReady(MediaError):
    """A dependency does not answer: `checks` names which."""

    status_code = 503
    code = "not-ready"
    title = "Not ready"
    response_headers = {"Retry-After": RETRY_AFTER_HEADER}


class Readiness(BaseModel):
    status: str = Field(description="`ok`")
    checks: dict[str, str] = Field(description="`ok` per part: database, storage, broker.")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers; says nothing about its dependencies."""
    return {"status": "ok"}


async def _database(state: AppState) -> None:
    async with state.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _storage(state: AppState) -> None:
    await state.store.check()


async def _broker(state: AppState) -> None:
    timeout = state.settings.readiness_timeout_seconds
    await asyncio.to_thread(check_broker, state.producer, timeout)


CHECKS: dict[str, Callable[[AppState], Awaitable[None]]] = {
    "database": _database,
    "storage": _storage,
    "broker": _broker,
}


async def _run(state: AppState, name: str, check: Callable[[AppState], Awaitable[None]]) -> str:
    """The part's state, `ok`, `timeout` or `error`: only the log says why (the exception's
    name and message would tell anyone what runs inside)."""
    timeout = state.settings.readiness_timeout_seconds
    try:
        await asyncio.wait_for(check(state), timeout)
    except TimeoutError:
        log.warning("readiness: %s did not answer within %g s", name, timeout)
        return "timeout"
    except Exception as exc:
        log.warning("readiness: %s failed: %r", name, exc)
        return "error"
    return "ok"


@router.get(
    "/readyz",
    response_model=None,
    responses={200: {"model": Readiness}, **problem_responses(NotReady)},
)
async def readyz(state: StateDep) -> Readiness | JSONResponse:
    """Readiness: database, storage and broker all answer; 503 names the parts that do not."""
    results = await asyncio.gather(*(_run(state, name, check) for name, check in CHECKS.items()))
    checks = dict(zip(CHECKS, results, strict=True))
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        resp = problem(
            NotReady.status_code,
            NotReady.code,
            NotReady.title,
            f"unavailable: {', '.join(failing)}",
            checks=checks,
        )
        resp.headers["Retry-After"] = str(NOT_READY_RETRY_AFTER_SECONDS)
        return resp
    return Readiness(status="ok", checks=checks)


async def _job_counts(state: AppState) -> list[tuple[str, str, int]] | None:
    """Jobs by kind and state, or None when the database does not answer in time: like the
    broker's, its outage must not take the rest of the scrape down with it."""

    async def read() -> list[tuple[str, str, int]]:
        async with state.sessions() as session:
            return await jobs_repository.counts(session)

    try:
        return await asyncio.wait_for(read(), state.settings.readiness_timeout_seconds)
    except Exception:
        return None


async def _queue_depths(state: AppState) -> dict[str, int] | None:
    """Depth of every queue, or None when the broker does not answer in time: a scrape during
    an outage still reports everything else (and `media_broker_up 0`)."""
    timeout = state.settings.readiness_timeout_seconds
    read = asyncio.to_thread(queue_depths, state.producer, QUEUES, timeout)
    try:
        return await asyncio.wait_for(read, timeout)
    except Exception:
        return None


async def render_metrics(state: AppState) -> PlainTextResponse:
    """A scrape, on whichever port serves it: the server's counters plus fleet-wide job counts
    and queue depths (read side by side: one grouped query and one pooled broker connection)."""
    counts, depths = await asyncio.gather(_job_counts(state), _queue_depths(state))
    readings = ScrapeReadings(jobs=counts, queue_depths=depths)
    # In multiprocess mode this reads every server process's files: off the event loop.
    body = await asyncio.to_thread(state.metrics.render, readings)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses=problem_responses(NotFound),  # MEDIA_METRICS_PORT serves them instead
)
async def metrics(state: StateDep) -> PlainTextResponse:
    """Prometheus text format; not here when they have a port of their own (kept off the
    public listener)."""
    if state.settings.metrics_port:
        raise NotFound()
    return await render_metrics(state)
