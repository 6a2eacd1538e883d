"""UI test fixtures: Debian's headless Chromium through Playwright, and a real cluster behind a gateway."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.helpers import Cluster, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DESKTOP: ViewportSize = {"width": 1360, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
VIEWER_ZONE = "America/New_York"  # the browser's zone: never UTC, so "job's zone vs yours" shows both
WAIT_MS = 20_000
ADMIN_TOKEN = "admin-token-0123456789"
READ_TOKEN = "read-token-0123456789ab"

expect.set_options(timeout=WAIT_MS)


@dataclass
class Gateway:
    """A running cluster's gateway: its URL and an HTTP client for setting up and checking state."""

    url: str
    http: httpx.Client

    def create_job(self, **job: Any) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json=job)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def job(self, name: str) -> dict[str, Any] | None:
        response = self.http.get(f"/v1/jobs/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    def run(self, name: str) -> None:
        """Runs the job now. Right after start-up the leader may know the executor (its hello) before it sees its
        subscription, and answers 503 (nothing launched): asked again until it takes the run."""

        answers: list[httpx.Response] = []

        def answered() -> bool:
            answers.append(self.http.post(f"/v1/jobs/{name}/run"))
            return answers[-1].status_code != 503

        wait_until(answered, 10, 0.2, f"the leader to take a run of {name}")
        assert answers[-1].status_code == 202, answers[-1].text

    def executions(self, name: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/jobs/{name}/executions")
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found

    def wait_finished(self, name: str, count: int = 1, timeout_s: float = 30) -> list[dict[str, Any]]:
        """The job's executions once at least `count` of them have finished."""

        def finished() -> list[dict[str, Any]]:
            done = [e for e in self.executions(name) if e.get("status") not in ("pending", "running")]
            return done if len(done) >= count else []

        return wait_until(finished, timeout_s, 0.2, f"{count} finished execution(s) of {name}")


def start_cluster(
    cluster: Cluster, *gateway_args: str, token: str = "", executor_args: tuple[str, ...] = ()
) -> Gateway:
    """A scheduler, an executor and a gateway, once the gateway sees a leader and a healthy executor."""
    cluster.scheduler()
    cluster.executor(*executor_args)
    _, url = cluster.gateway(*gateway_args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx.Client(base_url=url, timeout=10, headers=headers)

    def ready() -> bool:
        try:
            health = http.get("/health").json()
            members = http.get("/v1/members")
        except (httpx.TransportError, ValueError):
            return False
        if not health.get("leader_name") or members.status_code != 200:
            return False
        return any(m["Tags"].get("role") == "executor" and m["Status"] == 1 for m in members.json())

    wait_until(ready, 30, 0.2, "a gateway with a leader and a healthy executor")
    return Gateway(url, http)


@pytest.fixture
def gateway(cluster: Cluster) -> Iterator[Gateway]:
    gw = start_cluster(cluster)
    yield gw
    gw.http.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Module scope, not session: the sync API owns the thread's event loop while it runs.
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"the UI tests need Debian's chromium at {CHROMIUM} (scripts/setup.sh --tests)", pytrace=False)
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@dataclass
class PageWatch:
    """What a page did that a test must not let pass: script errors and requests to other hosts."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        # Failed fetches are logged by the browser itself (e.g. the optional /v1/whoami answering 404);
        # what the UI does about them is checked by the tests.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def request(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in ("127.0.0.1", "localhost"):
            self.foreign.append(url)


def open_context(browser: Browser, *, phone: bool = False, dark: bool = False) -> BrowserContext:
    return browser.new_context(
        viewport=PHONE if phone else DESKTOP,
        color_scheme="dark" if dark else "light",
        reduced_motion="reduce",
        timezone_id=VIEWER_ZONE,
        locale="en-US",
    )


def watch(page: Page) -> PageWatch:
    seen = PageWatch()
    page.on("console", seen.console)
    page.on("pageerror", lambda error: seen.errors.append(f"uncaught: {error}"))
    page.on("request", lambda request: seen.request(request.url))
    page.set_default_timeout(WAIT_MS)
    return seen


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A desktop page in light mode; the test fails if the UI throws, logs an error or calls another host."""
    context = open_context(browser)
    new_page = context.new_page()
    seen = watch(new_page)
    yield new_page
    context.close()
    assert not seen.errors, f"errors in the browser console: {seen.errors}"
    assert not seen.foreign, f"requests to hosts other than the gateway: {seen.foreign}"


def shoot(page: Page, name: str) -> Path:
    """A screenshot of the whole page in tests/artifacts/ (ignored by git). The viewport is stretched to the
    page's height meanwhile, so sticky bars sit where a reader sees them, not mid-page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"ui-{name}.png"
    viewport = page.viewport_size or DESKTOP
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    page.set_viewport_size({"width": viewport["width"], "height": max(height, viewport["height"])})
    try:
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(viewport)
    return path
