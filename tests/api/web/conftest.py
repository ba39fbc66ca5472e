"""Headless Chromium (Debian's, driven by Playwright) against the API served on a real socket,
with a real worker making thumbnails and tags."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, sync_playwright

from media_api.settings import Settings
from tests.support.workers import running_worker

CHROMIUM = Path(os.environ.get("MEDIA_TEST_CHROMIUM", "/usr/bin/chromium"))
# The flags the machine's Chromium needs here (root, no GPU, a closed network).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("MEDIA_TEST_ARTIFACTS", "test-artifacts")).resolve() / "web"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Package-scoped: the sync API runs an event loop on this thread until it stops, which
    the async tests that follow this package could not run beside."""
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """`make test` installs Debian's chromium when it is missing; Playwright downloads nothing."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make test` (it installs chromium)"
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def web_worker(app_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A worker on the thumbnails and tagging queues, as `make dev` runs one."""
    log = tmp_path_factory.mktemp("web-worker") / "worker.log"
    with running_worker(app_settings, log, "-Q", "thumbnails,tagging"):
        yield


@dataclass
class Watch:
    """What a page did that it should not: console errors (CSP violations land there too),
    uncaught exceptions, requests to any host but this machine's."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # "METHOD /path?query" of the API's

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def request(self, request: Request) -> None:
        url = urlsplit(request.url)
        if request.url.startswith(("http:", "https:")) and url.hostname not in LOCAL_HOSTS:
            self.foreign.append(request.url)
        if url.path.startswith("/v1/"):
            self.requests.append(f"{request.method} {url.path}?{url.query}".rstrip("?"))


@dataclass
class Browsing:
    page: Page
    base_url: str
    watch: Watch

    def screenshot(self, name: str) -> Path:
        """Saved as a test artifact (test-artifacts/web/, or $MEDIA_TEST_ARTIFACTS)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        return path


def open_page(
    browser: Browser, base_url: str, viewport: dict[str, int], **context_options: str
) -> Iterator[Browsing]:
    """A page in a fresh context (`context_options`: locale, timezone_id...), watched."""
    context = browser.new_context(viewport=viewport, base_url=base_url, **context_options)
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = Watch()
    page.on("console", watch.console)
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on("request", watch.request)
    try:
        yield Browsing(page, base_url, watch)
    finally:
        context.close()


@pytest.fixture
def desktop(browser: Browser, live_server: str) -> Iterator[Browsing]:
    yield from open_page(browser, live_server, DESKTOP)


@pytest.fixture
def phone(browser: Browser, live_server: str) -> Iterator[Browsing]:
    yield from open_page(browser, live_server, PHONE)
