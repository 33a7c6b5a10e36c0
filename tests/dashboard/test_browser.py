"""The dashboard in a real headless browser: Debian's Chromium driven by Playwright opens the
queue page, follows a failed job to its page, presses Requeue and sees the job pending again.

Skips, saying why, where Playwright or a Chromium is missing (`apt-get install chromium`; CI
installs it when it can, .ci/run). With DASHBOARD_SCREENSHOTS=docs/img it also writes the
screenshots docs/dashboard.md shows.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.dashboard.conftest import TOKEN, seed
from tests.support.db import one
from worker.config import load_settings
from worker.dashboard import create_app

SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


def _chromium() -> str:
    """The Chromium binary, or a skip that says what is missing."""
    given = os.environ.get("DASHBOARD_CHROMIUM")
    found = given or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium, or set "
                    "DASHBOARD_CHROMIUM to a Chromium binary)")
    return found


@pytest.fixture
def served(dsn: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The dashboard on a real socket (uvicorn in a thread of this process, stopped at the
    end), over the seeded course and jobs."""
    ids = seed(dsn)
    settings = load_settings(database_url=dsn, dashboard_token=TOKEN)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, dsn), host="127.0.0.1", port=0,
                                           log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert server.started, "the dashboard did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", ids
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"dashboard-{name}.png"), full_page=True)


def test_requeue_a_failed_job_in_a_real_browser(served: tuple[str, dict[str, Any]],
                                                dsn: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed (pip install playwright)")
    chromium = _chromium()
    base, ids = served
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        except sync_api.Error as exc:
            pytest.skip(f"Chromium at {chromium} does not start: {str(exc).splitlines()[0]}")
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            _shot(page, "queue")
            page.click("text=Sign in to act")
            page.fill("input[name=token]", TOKEN)
            page.click("button:has-text('Sign in')")
            assert page.locator(".done").inner_text().startswith("Signed in")
            page.click("a:has-text('guard_fail')")  # the queue's failures of the last hour
            assert "/failures" in page.url
            _shot(page, "failures")
            page.click(f"a[href='/jobs/{ids['guard']}']")
            assert page.locator("#job-state").inner_text() == "failed"
            page.click("button:has-text('Requeue')")
            page.wait_for_url(f"{base}/jobs/*?done=requeued")
            assert page.locator("#job-state").inner_text() == "pending"
            assert f"#{ids['guard']}" in page.locator("dl").inner_text()  # requeued from
            _shot(page, "job")
            if SHOTS:
                for path, name in ((f"/jobs/{ids['done']}", "job-completed"),
                                   ("/models", "models"), ("/content", "content"),
                                   (f"/courses/{ids['course']}", "course"),
                                   (f"/questions/{ids['ready']}", "question")):
                    page.goto(base + path)
                    _shot(page, name)
        finally:
            browser.close()
    new = one(dsn, "SELECT requeued_to FROM queue.jobs WHERE id = %s", (ids["guard"],))
    assert one(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (new,)) == "pending"
