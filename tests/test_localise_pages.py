"""Explore and Evaluate show localisation scores (AppTest, untrained WBC model, bundled crops)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[1] / "dashboard" / "views"
pytestmark = pytest.mark.slow  # two page runs with Captum: about 15-60 s depending on machine load


@pytest.fixture(scope="module", autouse=True)
def weights(tmp_path_factory: pytest.TempPathFactory, untrained_weights: object) -> Iterator[Path]:
    with untrained_weights(tmp_path_factory.mktemp("weights"), [("wbc", "wbc_cnn")]) as folder:
        yield folder


def test_explore_shows_the_cell_box_score_and_no_lung_toggle_for_wbc() -> None:
    at = AppTest.from_file(str(PAGES / "explore.py"), default_timeout=120).run()
    at.selectbox(key="explore_task").set_value("wbc").run()
    at.multiselect(key="explore_examples_wbc").set_value([0]).run()
    at.multiselect(key="explore_methods").set_value(["saliency"])
    at.checkbox(key="explore_faith").uncheck().run()
    assert not at.exception
    assert any("inside the cell box (chance" in c.value for c in at.caption)
    assert not any(t.key == "explore_lung_outline" for t in at.toggle)


def test_evaluate_averages_the_box_score_per_model_and_method() -> None:
    at = AppTest.from_file(str(PAGES / "evaluate.py"), default_timeout=120).run()
    at.selectbox(key="evaluate_task").set_value("wbc").run()
    at.radio(key="evaluate_source").set_value("examples").run()
    at.multiselect(key="evaluate_loc_methods").set_value(["saliency"])
    at.button(key="evaluate_loc_run").click().run()
    assert not at.exception
    table = next(df.value for df in at.dataframe if "inside" in df.value.columns)
    assert list(table["method"]) == ["Saliency"] and int(table["images scored"][0]) == 8
    assert 0 < table["chance"][0] < 1
