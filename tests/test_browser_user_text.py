"""In a real headless Chromium: hostile names are shown as text, never drawn, linked or fetched.

Markdown image and link syntax, raw HTML and ``javascript:`` links are fed through every page
that echoes a user's name (Explore file names, Evaluate zip, folder names, CSV headers and
values). Each points at a canary HTTP server on 127.0.0.1: the test asserts that the literal
text is on the page, that no ``img``/``a``/event-handler element was made from it, and that
neither the browser nor the canary saw a request for it. Launched like tests/test_browser_e2e.py.
"""

from __future__ import annotations

import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.devserver import CHROMIUM, CHROMIUM_ARGS, free_port

ROOT = Path(__file__).resolve().parents[1]
PNG = next((ROOT / "examples" / "malaria" / "Uninfected").glob("*.png")).read_bytes()
WAIT_MS = 120_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]
pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


class _Canary(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def canary() -> Iterator[int]:
    """A server on 127.0.0.1 that records every request: the address every hostile name names."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Canary)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, live_server: object) -> Iterator[str]:
    with live_server(tmp_path_factory, [("malaria", "shallow_cnn1")]) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


def _names(port: int) -> dict[str, str]:
    at = f"127.0.0.1:{port}"
    return {
        "image": f"![m](http:{at})",
        "link": "[click](javascript:alert(1))",
        "html": f"<img src=http:{at} onerror=alert(1)>",
        "autolink": f"http:{at}",
    }


def _made_from(page: object, port: int) -> list[str]:
    """Elements built from hostile text: images or links to the canary, javascript: links, handlers."""
    return page.evaluate(
        "(at) => Array.from(document.querySelectorAll("
        "`img[src*='${at}'], a[href*='${at}'], a[href^='javascript:'], [onerror], iframe, script[src*='${at}']`"
        ")).map(e => e.outerHTML)",
        f"127.0.0.1:{port}",
    )


def _open(page: object, name: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).wait_for(timeout=WAIT_MS)


def _watch(page: object, port: int) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if f":{port}" in r.url or r.url.startswith("javascript") else None)
    return seen


def test_explore_names_are_shown_as_text(server: str, browser: object, canary: int) -> None:
    names = _names(canary)
    page = browser.new_page()
    requests = _watch(page, canary)
    page.goto(server)
    _open(page, "Explore")
    files = [{"name": f"{names['image']}.png", "mimeType": "image/png", "buffer": PNG}]
    files += [
        {"name": f"{names[k]}.png", "mimeType": "image/png", "buffer": b"not pixels"}
        for k in ("link", "html", "autolink")
    ]
    page.locator("input[type=file]").first.set_input_files(files=files)
    page.get_by_role("heading", name="Predictions").wait_for(timeout=WAIT_MS)
    for name in names.values():  # the caption of the good image, the errors of the others
        # .filter(visible=True): the dataframe's hidden accessibility cells match the text too
        page.get_by_text(f"{name}.png").filter(visible=True).first.wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(1500)
    assert _made_from(page, canary) == []
    assert requests == [] and _Canary.hits == []
    page.close()


def test_evaluate_zip_folder_and_csv_text_is_shown_as_text(server: str, browser: object, canary: int, zip_bytes) -> None:
    names = _names(canary)
    cases = [
        ("set.zip", {f"{names['image']}/a.png": PNG, f"{names['html']}/b.png": PNG}, names["image"]),
        ("set.zip", {"a.png": PNG, "labels.csv": f"{names['image']},label\na.png,x\n".encode()}, names["image"]),
        ("set.zip", {"a.png": PNG, "labels.csv": f"filename,label\na.png,{names['link']}\n".encode()},
         names["link"]),
        (f"{names['link']}.zip", {"Uninfected/a.png": PNG, "Parasitized/b.png": PNG}, f"{names['link']}.zip"),
        # names inside class folders reach the per-image table, the image picker and the explanation
        ("names.zip", {f"Uninfected/{names['image']}.png": PNG, f"Parasitized/{names['html']}.png": PNG},
         "Most confident mistakes first"),
    ]
    page = browser.new_page()
    requests = _watch(page, canary)
    page.goto(server)
    _open(page, "Evaluate")
    for zip_name, members, shown in cases:
        page.locator("input[type=file]").first.set_input_files(
            files=[{"name": zip_name, "mimeType": "application/zip", "buffer": zip_bytes(members, zipfile.ZIP_STORED)}]
        )
        page.get_by_text(shown).filter(visible=True).first.wait_for(timeout=WAIT_MS)
        page.wait_for_timeout(1000)
        assert _made_from(page, canary) == [], zip_name
    assert requests == [] and _Canary.hits == []
    page.close()
