"""In a real headless Chromium: Explore shows the lung-outline toggle and the inside-the-lungs
score under each map for a bundled chest X-ray.

Needs Debian's chromium (/usr/bin/chromium), the playwright package and the shipped lung
model (weights/lungs/unet_lite0). The COVID-19 classifier is an untrained folder written
into a temporary weights directory; the lung model is the shipped one, copied beside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.devserver import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "test-output" / "browser"
LUNGS = ROOT / "weights" / "lungs" / "unet_lite0"
XRAY = next(iter(sorted((ROOT / "examples" / "covid" / "COVID-19").glob("*.jpg"))), None)
WAIT_MS = 180_000
LUNG_SCORE = re.compile(r"\d+ % inside the lung field \(chance \d+ %\)|lung field not found; score not computed")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed at /usr/bin/chromium"),
    pytest.mark.skipif(not (LUNGS / "model.safetensors").is_file(), reason="the lung model is not shipped here"),
    pytest.mark.skipif(XRAY is None, reason="no bundled COVID-19 X-ray"),
]

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, live_server: object) -> Iterator[str]:
    with live_server(tmp_path_factory, [("covid", "mobilenet_v2")], [(LUNGS, "lungs/unet_lite0")]) as url:
        yield url


def _upload_when_idle(page: object, path: Path) -> None:
    """Upload once the rerun that the task change started has finished.

    An upload sent while that rerun still draws the page can land on the uploader it replaces
    (seen under load: the server read 0 images); so wait for the running indicator to go,
    and send the file again if no prediction appears.
    """
    for attempt in range(2):
        page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=WAIT_MS)
        page.locator("input[type=file]").first.set_input_files(str(path))
        try:
            page.get_by_role("heading", name="Predictions").wait_for(timeout=WAIT_MS // 3)
            return
        except Exception:  # playwright's TimeoutError: try the upload once more
            if attempt:
                raise


def test_explore_xray_shows_lung_toggle_and_score(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=list(CHROMIUM_ARGS), viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        page.goto(server)
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Explore").click()
        page.get_by_role("heading", name="Explore").wait_for(timeout=WAIT_MS)
        page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Task", exact=True)).click()
        page.get_by_role("option", name=re.compile("COVID-19 vs normal")).click()
        page.get_by_text("Does a frontal chest X-ray show").wait_for(timeout=WAIT_MS)
        _upload_when_idle(page, XRAY)
        page.get_by_role("heading", name="Explanations").wait_for(timeout=WAIT_MS)
        toggle = page.get_by_text("Show the lung outline")
        toggle.wait_for(timeout=WAIT_MS)
        page.get_by_text(LUNG_SCORE).first.wait_for(timeout=WAIT_MS)  # the score under a map
        toggle.click()
        page.wait_for_timeout(1500)
        page.get_by_text(LUNG_SCORE).first.wait_for(timeout=WAIT_MS)
        assert page.locator("text=Traceback").count() == 0
        OUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUT / "20_explore_lung_outline.png"), full_page=True)
        context.close()
