"""End to end in a real headless Chromium: start the dashboard, upload, wait, screenshot.

Needs Debian's chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the
``playwright`` Python package (its own browser downloads are not used). Screenshots go to
``test-output/browser/``. The dashboard runs against untrained model folders written into
a temporary weights directory, so the test does not depend on training.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.devserver import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "test-output" / "browser"
EXAMPLES = ROOT / "examples" / "malaria"
WAIT_MS = 120_000
SCORE = re.compile(r"insertion \d\.\d{3}")  # a faithfulness score under a drawn map

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, live_server: object) -> Iterator[str]:
    """The dashboard on a free port of 127.0.0.1, with three untrained malaria models."""
    with live_server(tmp_path_factory, [("malaria", n) for n in ("shallow_cnn1", "shallow_cnn3", "vgg16")]) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


def _shot(page: object, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    OUT.mkdir(parents=True, exist_ok=True)
    height = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll("
        "'[data-testid=stMain], [data-testid=stAppViewContainer], section'))"
        ".map(e => e.scrollHeight), 600)"
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 8000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(OUT / name), full_page=True)
    page.set_viewport_size(size)


def _malaria_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(EXAMPLES.glob("*/*.png")):
            zf.write(path, f"testset/{path.parent.name}/{path.name}")
    return buffer.getvalue()


def _open(page: object, name: str) -> None:
    """Go to a page through the sidebar navigation and wait for its title."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).wait_for(timeout=WAIT_MS)


def _no_errors(page: object) -> None:
    assert page.locator("text=Traceback").count() == 0


def test_explore_upload_shows_prediction_and_gradcam(server: str, browser: object) -> None:
    page = browser.new_page()
    started = time.monotonic()
    page.goto(server)
    page.get_by_role("heading", name="Explainable medical image classifiers").wait_for(timeout=WAIT_MS)
    first_page_seconds = time.monotonic() - started
    page.get_by_text("not for diagnosis").first.wait_for(timeout=WAIT_MS)
    _shot(page, "00_start.png")
    _open(page, "Explore")
    page.locator("input[type=file]").first.wait_for(state="attached", timeout=WAIT_MS)
    _shot(page, "01_explore_start.png")
    image = next(EXAMPLES.glob("Parasitized/*.png"))
    page.locator("input[type=file]").first.set_input_files(str(image))
    page.get_by_role("heading", name="Predictions").wait_for(timeout=WAIT_MS)
    page.get_by_text(SCORE).first.wait_for(timeout=WAIT_MS)  # the maps and their scores
    page.get_by_role("button", name="Download the figure (PNG)").wait_for(timeout=WAIT_MS)
    grid_images = page.locator("[data-testid=stImageContainer] img")
    assert grid_images.count() >= 3  # the upload, what the model sees, Grad-CAM (and IG)
    _shot(page, "02_explore_gradcam.png")
    _no_errors(page)
    assert first_page_seconds < 10
    page.close()


def test_explore_bad_upload_shows_a_message(server: str, browser: object) -> None:
    page = browser.new_page()
    page.goto(server)
    _open(page, "Explore")
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"this is not an image"}]
    )
    page.get_by_text("this is not an image").first.wait_for(timeout=WAIT_MS)
    _shot(page, "03_explore_bad_upload.png")
    _no_errors(page)
    page.close()


def test_evaluate_zip_upload_draws_roc(server: str, browser: object) -> None:
    page = browser.new_page()
    page.goto(server)
    _open(page, "Evaluate")
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "malaria_test.zip", "mimeType": "application/zip", "buffer": _malaria_zip()}]
    )
    page.locator(".js-plotly-plot").filter(has_text="ROC curve").first.wait_for(timeout=WAIT_MS)
    page.get_by_text("Most confident mistakes first").wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(1500)
    _shot(page, "04_evaluate_roc.png")
    # clicking the third row of the per-image table shows that image with its explanation
    chosen = (
        page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Image", exact=True)).locator("input")
    )
    first = chosen.input_value()
    table = page.get_by_test_id("stDataFrame").last
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + 35 + 2 * 35 + 17)  # row-selection column, third row
    page.wait_for_function(
        "(old) => { const e = Array.from(document.querySelectorAll('[data-testid=stSelectbox] input'))"
        ".find(i => i.value.includes(' · truth ')); return e && e.value !== old; }",
        arg=first,
        timeout=WAIT_MS,
    )
    page.get_by_text(SCORE).first.wait_for(timeout=WAIT_MS)
    _shot(page, "05_evaluate_row_clicked.png")
    _no_errors(page)
    page.close()


def test_evaluate_zip_without_images_shows_a_message(server: str, browser: object) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("Parasitized/readme.txt", "no images here")
    page = browser.new_page()
    page.goto(server)
    _open(page, "Evaluate")
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "empty.zip", "mimeType": "application/zip", "buffer": buffer.getvalue()}]
    )
    page.get_by_text("no readable images").first.wait_for(timeout=WAIT_MS)
    _shot(page, "06_evaluate_bad_zip.png")
    _no_errors(page)
    page.close()


def test_compare_shallow_vs_deep_shows_sizes_agreement_and_both_maps(server: str, browser: object) -> None:
    page = browser.new_page()
    page.goto(server)
    _open(page, "Compare")
    page.get_by_text("Shallow vs deep").click()
    page.get_by_role("heading", name="Size and speed").wait_for(timeout=WAIT_MS)
    page.get_by_text("Same predicted class").wait_for(timeout=WAIT_MS)
    page.get_by_text("Mean rank correlation").wait_for(timeout=WAIT_MS)
    # the bundled image plus one Grad-CAM overlay per model, for each of the 4 images shown
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('[data-testid=stImageContainer] img'))"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= 12",
        timeout=WAIT_MS,
    )
    _shot(page, "07_compare_shallow_deep.png")
    _no_errors(page)
    page.close()


def test_reproduction_tables_stay_inside_the_page(server: str, browser: object) -> None:
    """The widest paper-vs-ours table (12 columns) scrolls in its own box, not off the page."""
    page = browser.new_page()
    page.goto(server)
    _open(page, "Reproduction")
    page.locator("table").first.wait_for(timeout=WAIT_MS)
    overflow = page.evaluate(
        "() => { const main = document.querySelector('[data-testid=stMainBlockContainer]')"
        ".getBoundingClientRect().right;"
        " return Array.from(document.querySelectorAll('table'))"
        ".map(t => t.getBoundingClientRect().right - main).filter(d => d > 1); }"
    )
    assert overflow == [], f"tables reach past the page's right edge by {overflow} px"
    assert page.evaluate("() => Array.from(document.querySelectorAll('table')).some("
                         "t => t.scrollWidth > t.clientWidth)"), "expected one wide table to scroll"
    _shot(page, "08_reproduction.png")
    _no_errors(page)
    page.close()
