"""User text stays text: names, CSV cells and messages reach the page only through ``as_text``.

AppTest sees the Markdown source Streamlit would render, so these tests check that every
echo of a hostile name arrives escaped; tests/test_browser_user_text.py checks in Chromium
that nothing is drawn or fetched from it.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.common import as_text

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "dashboard" / "views"
PNG = next((ROOT / "examples" / "malaria" / "Uninfected").glob("*.png")).read_bytes()
HOSTILE = (
    "![f](https:127.0.0.1:8611)",
    "[click](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    ":red[big] $x^2$ **bold** `code` # head",
    "www.example.com and a@b.co",
)
# A character Markdown would act on, not preceded by the escaping backslash.
UNESCAPED = re.compile(r"(?<!\\)[!\[\]()<>:*`#$@]")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@pytest.mark.parametrize("text", HOSTILE)
def test_as_text_escapes_every_markdown_and_html_character(text: str) -> None:
    shown = as_text(text)
    assert not UNESCAPED.search(shown)
    assert _unescape(shown) == text  # the user reads exactly what they gave
    assert as_text("a\nb\x00c") == "a\ufffdb\ufffdc"  # no line breaks, no control characters


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, untrained_weights: object) -> Iterator[Path]:
    with untrained_weights(tmp_path_factory.mktemp("weights"), [("malaria", "shallow_cnn1")]) as folder:
        yield folder


def _page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=120).run()


def _markdown_texts(at: AppTest) -> list[str]:
    texts = [e.value for kind in (at.markdown, at.caption, at.error, at.info, at.warning) for e in kind]
    return texts + [str(c) for img in at.image for c in img.captions if c]


def _assert_escaped(at: AppTest, needle: str) -> None:
    """``needle`` is shown (unescaped it reads as given) and every echo of it is escaped."""
    assert not at.exception, [e.value for e in at.exception]
    echoes = [t for t in _markdown_texts(at) if needle in _unescape(t)]
    assert echoes, f"{needle!r} is not shown in the page"
    for text in echoes:
        assert as_text(needle) in text, text


@pytest.mark.parametrize("name", HOSTILE)
def test_explore_file_names_are_text(weights: Path, name: str) -> None:
    at = _page("explore")
    at.file_uploader(key="explore_upload_malaria").set_value(
        [(f"{name}.png", PNG, "image/png"), (f"bad {name}.png", b"not pixels", "image/png")]
    )
    at.run()
    _assert_escaped(at, f"{name}.png")  # the image caption
    _assert_escaped(at, f"bad {name}.png")  # the error message


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ({"![f](https:127.0.0.1:8611)/a.png": PNG, "x/b.png": PNG}, "![f](https:127.0.0.1:8611)"),  # folder
        ({"a.png": PNG, "labels.csv": b"![h](https:127.0.0.1:8611),label\na.png,x\n"}, "![h](https:127.0.0.1:8611)"),
        ({"a.png": PNG, "labels.csv": b"filename,label\na.png,![v](https:127.0.0.1:8611)\n"}, "![v](https:127.0.0.1:8611)"),
        ({"a.png": PNG, "labels.csv": b"filename,label\n<b>x</b>.png,Uninfected\n"}, "<b>x</b>.png"),
    ],
)
def test_evaluate_folder_names_and_csv_cells_are_text(weights: Path, members: dict, needle: str, zip_bytes) -> None:
    at = _page("evaluate")
    at.file_uploader(key="evaluate_zip_malaria").set_value(("t.zip", zip_bytes(members, zipfile.ZIP_STORED), "application/zip"))
    at.run()
    _assert_escaped(at, needle)


def test_evaluate_zip_name_is_text(weights: Path, zip_bytes) -> None:
    name = "[click](javascript:alert(1)).zip"
    at = _page("evaluate")
    at.file_uploader(key="evaluate_zip_malaria").set_value((name, zip_bytes({"Uninfected/a.png": PNG}, zipfile.ZIP_STORED), "application/zip"))
    at.run()
    _assert_escaped(at, name)


def test_explore_reads_at_most_400_megapixels_per_page(weights: Path) -> None:
    """Eleven 6300 x 6300 uploads: ten are read (reduced to 1024 px), the eleventh is refused clearly."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (6300, 6300)).save(buffer, format="PNG")
    at = _page("explore")
    at.file_uploader(key="explore_upload_malaria").set_value(
        [(f"black_{i}.png", buffer.getvalue(), "image/png") for i in range(11)]
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [_unescape(e.value) for e in at.error]
    assert errors == [
        "1 of the 11 images were not read: together the images hold more than 400 megapixels, the most "
        "one page reads at once. Remove some uploads (or downscale them) and try again."
    ]
