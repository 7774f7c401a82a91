"""The web page in a real headless browser: upload a photo, see every face boxed with an age, pick a face."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.main import create_app
from service.settings import ServiceSettings
from tests.service.conftest import START_LABEL, photo_path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def base_url(settings: ServiceSettings) -> Iterator[str]:
    """A real uvicorn server on a free localhost port, in a background thread, ready to answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        pytest.fail("the server did not become healthy within 120 s")
    yield url
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_the_page_shows_the_age_of_every_face(base_url: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (`apt-get install chromium`; .ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/")
            page.set_input_files("#file", str(photo_path("astronaut.png")))
            page.wait_for_selector("#faces li", timeout=60_000)
            first = page.inner_text("#faces li")
            assert re.fullmatch(r"Age \d+ \(\d+-\d+\), 90% interval · P\(age ≥ 18\) = [\d.]+%", first), first
            status = page.inner_text("#status")
            assert re.search(r"estimated age: \d+ \(\d+-\d+\) \(90% intervals, uncalibrated\)", status), status
            assert page.locator("#curve polygon.interval").count() == 1
            assert page.eval_on_selector("#photo", "canvas => [canvas.width, canvas.height]") == [512, 512]
            assert page.locator("#curve polyline").count() == 1

            page.set_input_files("#file", str(photo_path("2008_002506.jpg")))
            # Locators wait here: the page's Content-Security-Policy forbids wait_for_function's string eval.
            expect(page.locator("#faces li")).to_have_count(3, timeout=60_000)
            page.locator("#faces li").nth(2).click()
            assert "selected" in (page.locator("#faces li").nth(2).get_attribute("class") or "")
            assert page.locator("#curve polyline").count() == 1

            # Clicking inside a face's box on the photo selects that face.
            left, top, right, bottom = page.evaluate("state.faces[1].box")
            photo = page.locator("#photo").bounding_box()
            assert photo is not None
            scale = photo["width"] / page.eval_on_selector("#photo", "canvas => canvas.width")
            page.mouse.click(photo["x"] + (left + right) / 2 * scale, photo["y"] + (top + bottom) / 2 * scale)
            assert "selected" in (page.locator("#faces li").nth(1).get_attribute("class") or "")

            # "At least N years": every face shows P(age >= N), the server's raw_probas[N - start_label - 1].
            page.fill("#min-age", "30")
            page.dispatch_event("#min-age", "change")
            for index in range(3):
                expect(page.locator("#faces li").nth(index)).to_contain_text("P(age ≥ 30)", timeout=60_000)
            shown = page.eval_on_selector_all("#faces li", "items => items.map(i => Number(i.dataset.pAtLeast))")
            expected = page.evaluate(f"state.faces.map(f => f.raw_probas[30 - {START_LABEL} - 1])")
            assert shown == pytest.approx(expected, abs=1e-6)
            page.select_option("#coverage", "0.5")
            expect(page.locator("#faces li").first).to_contain_text("50% interval", timeout=60_000)
            assert page.evaluate("state.faces.every(f => f.coverage === 0.5)")
        finally:
            browser.close()
