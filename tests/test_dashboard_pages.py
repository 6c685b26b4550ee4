"""Streamlit AppTest tests of every dashboard page, against untrained model folders.

The weights are written on the fly into a temporary folder (``MEDMODELS_WEIGHTS_DIR``) so
that the tests do not depend on training; Streamlit's caches are cleared around the module
because they live as long as the process.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
PAGES = ROOT / "dashboard" / "views"
TIMEOUT = 120
MODELS = (("malaria", "shallow_cnn1"), ("malaria", "shallow_cnn3"), ("malaria", "vgg16"), ("wbc", "wbc_cnn"))


@pytest.fixture(scope="module", autouse=True)
def weights(tmp_path_factory: pytest.TempPathFactory, untrained_weights: object) -> Iterator[Path]:
    with untrained_weights(tmp_path_factory.mktemp("weights"), MODELS) as folder:
        yield folder


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=TIMEOUT)
    return at.run()


def assert_clean(at: AppTest) -> None:
    """No exception element and no generic failure message in the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "failed unexpectedly" in e.value]


def malaria_examples_zip(zip_bytes) -> bytes:
    return zip_bytes(
        {
            f"set/{p.parent.name}/{p.name}": p.read_bytes()
            for p in sorted((ROOT / "examples" / "malaria").glob("*/*.png"))
        },
        zipfile.ZIP_STORED,
    )


def image_captions(at: AppTest) -> list[str]:
    return [str(c) for img in at.image for c in img.captions if c]


def frame(at: AppTest, column: str):  # noqa: ANN201 - pandas.DataFrame
    """The first table in the page with ``column`` (plain tables carry no key in AppTest)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a column {column!r}")


def metric(at: AppTest, model_title: str, key: str) -> float:
    return float(frame(at, "balanced_accuracy").loc[model_title, key])


# --------------------------------------------------------------------------- app shell


def test_first_page_is_the_start_page_with_notice() -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert at.title[0].value == "Explainable medical image classifiers"
    assert any("not for diagnosis" in w.value for w in at.warning)


def test_start_page_imports_no_torch() -> None:
    """The first page must appear fast: neither it nor the entry script may import torch."""
    import subprocess
    import sys

    script = (
        "import runpy, sys; sys.path.insert(0, %r)\n"
        "runpy.run_path(%r)\n"
        "print('torch' in sys.modules)\n" % (str(ROOT), str(PAGES / "home.py"))
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False"), out.stderr[-2000:]


@pytest.mark.parametrize("target", ["explore", "evaluate", "compare", "models", "reproduction"])
def test_every_page_shows_the_notice(target: str) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(f"views/{target}.py").run()  # through st.navigation
    assert_clean(at)
    assert at.title[0].value.lower() == target
    assert any("not for diagnosis" in w.value for w in at.warning)


# --------------------------------------------------------------------------- explore


def test_explore_lists_models_with_and_without_weights() -> None:
    at = page("explore")
    models = at.multiselect(key="explore_models_malaria")
    assert set(models.options) == {
        "Shallow CNN, 1 conv layer · shallow CNN",
        "Shallow CNN, 3 conv layers · shallow CNN",
        "VGG-16 · deep baseline",
    }
    assert any("resnet50" in m.value and "No trained weights" in m.value for m in at.markdown)
    at.selectbox(key="explore_task").set_value("wbc").run()
    assert at.multiselect(key="explore_models_wbc").value == ["wbc_cnn"]


def test_explore_example_gives_prediction_explanations_and_downloads() -> None:
    at = page("explore")
    at.multiselect(key="explore_models_malaria").set_value(["shallow_cnn1", "shallow_cnn3"])
    at.multiselect(key="explore_examples_malaria").set_value([0]).run()
    at.multiselect(key="explore_methods").set_value(["gradcam", "saliency"])
    at.slider(key="explore_ig_steps").set_value(4).run()
    assert_clean(at)
    predictions = at.dataframe[0].value
    assert len(predictions) == 2 and set(predictions["predicted"]) <= {"Parasitized", "Uninfected"}
    assert abs(predictions["p(Parasitized)"] + predictions["p(Uninfected)"] - 1).max() < 1e-5
    headers = [m.value for m in at.markdown]
    assert "**Grad-CAM**" in headers and "**Saliency**" in headers
    assert sum(c.value.startswith("deletion ") for c in at.caption) == 4  # 2 models x 2 methods
    assert len(at.get("download_button")) == 2


def test_explore_settings_change_the_maps() -> None:
    at = page("explore")
    at.multiselect(key="explore_examples_malaria").set_value([3]).run()
    at.multiselect(key="explore_methods").set_value(["occlusion"])
    at.checkbox(key="explore_faith").uncheck().run()
    assert_clean(at)
    assert not any(c.value.startswith("deletion ") for c in at.caption)
    from medmodels.zoo import list_models

    side = list_models("malaria")[0].preprocess.input_size  # the page's default model
    assert any(f"window {side // 8}" in cap for cap in image_captions(at))  # default: an eighth
    at.slider(key="explore_window").set_value(32).run()
    assert_clean(at)
    assert any("window 32" in cap for cap in image_captions(at))


def test_explore_sanity_check_plots_rank_correlation_per_layer() -> None:
    at = page("explore")
    at.multiselect(key="explore_examples_malaria").set_value([1]).run()
    at.multiselect(key="explore_methods").set_value(["gradcam"])
    at.checkbox(key="explore_faith").uncheck().run()
    at.slider(key="explore_sanity_layers").set_value(2)
    at.button(key="explore_sanity_run").click().run()
    assert_clean(at)
    charts = at.get("plotly_chart")
    assert any("Rank correlation after randomisation" in c.proto.spec for c in charts)


def test_explore_never_shows_exif(caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x013B] = "Dr Secret Name"  # Artist
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (180, 60, 90)).save(buffer, format="JPEG", exif=exif)
    caplog.set_level("INFO")  # the dashboard logs at INFO (Pillow prints EXIF tags at DEBUG)
    at = page("explore")
    at.file_uploader(key="explore_upload_malaria").set_value(("patient.jpg", buffer.getvalue(), "image/jpeg"))
    at.multiselect(key="explore_models_malaria").set_value(["shallow_cnn1"]).run()
    assert_clean(at)
    texts = [e.value for kind in (at.markdown, at.caption, at.error, at.info, at.warning) for e in kind]
    shown = " ".join(texts) + " ".join(str(df.value.to_dict()) for df in at.dataframe)
    assert "patient.jpg" in shown  # the page itself names the user's file; the log does not
    assert "Dr Secret Name" not in shown and "Dr Secret Name" not in caplog.text
    assert "patient.jpg" not in caplog.text  # the server log holds counts, not file names


def test_explore_bad_upload_shows_a_message_not_a_traceback() -> None:
    at = page("explore")
    at.file_uploader(key="explore_upload_malaria").set_value(
        ("scan.png", b"definitely not pixels", "image/png")
    )
    at.run()
    assert_clean(at)
    assert any("not an image" in e.value for e in at.error)
    at.file_uploader(key="explore_upload_malaria").set_value(
        (
            "cut.png",
            (ROOT / "examples/malaria/Uninfected").glob("*.png").__next__().read_bytes()[:200],
            "image/png",
        )
    )
    at.run()
    assert_clean(at)
    assert any("corrupt" in e.value or "truncated" in e.value for e in at.error)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_bundled_examples_and_threshold_changes_the_numbers() -> None:
    at = page("evaluate")
    at.multiselect(key="evaluate_models_malaria").set_value(["shallow_cnn1", "shallow_cnn3"])
    at.radio(key="evaluate_source").set_value("examples").run()
    assert_clean(at)
    title = "Shallow CNN, 1 conv layer"
    assert metric(at, title, "n") == 6
    at.slider(key="evaluate_threshold").set_value(0.01).run()
    assert metric(at, title, "sensitivity") == 1.0 and metric(at, title, "specificity") == 0.0
    at.slider(key="evaluate_threshold").set_value(0.99).run()
    assert metric(at, title, "sensitivity") == 0.0 and metric(at, title, "specificity") == 1.0
    assert metric(at, title, "tp") == 0
    assert len(at.get("plotly_chart")) >= 4  # ROC, PR, reliability, confusion
    per_image = frame(at, "confidence")
    assert len(per_image) == 6
    # mistakes first, the most confident mistake first (checked whether or not there are any)
    assert list(per_image["correct"]) == sorted(per_image["correct"])
    mistakes = per_image[~per_image["correct"]]
    assert list(mistakes["confidence"]) == sorted(mistakes["confidence"], reverse=True)


def test_evaluate_multiclass_has_one_vs_rest_curves_and_no_threshold() -> None:
    at = page("evaluate")
    at.selectbox(key="evaluate_task").set_value("wbc").run()
    at.radio(key="evaluate_source").set_value("examples").run()
    assert_clean(at)
    assert metric(at, "WBC CNN (proposed)", "n") == 8
    assert not [s for s in at.slider if s.key == "evaluate_threshold"]
    at.selectbox(key="evaluate_ovr_class").set_value(2).run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) >= 4


def test_evaluate_uploaded_zip_and_drill_down(zip_bytes) -> None:
    at = page("evaluate")
    at.multiselect(key="evaluate_models_malaria").set_value(["shallow_cnn3"])
    at.file_uploader(key="evaluate_zip_malaria").set_value(
        ("test.zip", malaria_examples_zip(zip_bytes), "application/zip")
    )
    at.run()
    assert_clean(at)
    assert metric(at, "Shallow CNN, 3 conv layers", "n") == 6
    image = at.selectbox(key="evaluate_image_shallow_cnn3_None")
    image.set_value(2).run()
    assert_clean(at)
    assert "**Grad-CAM**" in [m.value for m in at.markdown]


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"notes/readme.txt": b"hello"}, "holds 1 file but no readable images in class folders named "
                                         "Parasitized or Uninfected; found folders: none."),
        ({"cat/a.png": None, "dog/b.png": None}, "holds 2 files but no readable images in class folders "
                                                 "named Parasitized or Uninfected; found folders: cat, dog."),
    ],
)
def test_evaluate_bad_zips_show_a_message(members: dict, expected: str, zip_bytes) -> None:
    png = next((ROOT / "examples/malaria/Uninfected").glob("*.png")).read_bytes()
    data = zip_bytes({k: (v if v is not None else png) for k, v in members.items()}, zipfile.ZIP_STORED)
    at = page("evaluate")
    at.file_uploader(key="evaluate_zip_malaria").set_value(("bad.zip", data, "application/zip"))
    at.run()
    assert_clean(at)
    errors = " ".join(e.value for e in at.error).replace("\\", "")  # st.error shows escaped markdown
    assert expected in errors


def test_evaluate_csv_labels_not_matching_the_task(zip_bytes) -> None:
    png = next((ROOT / "examples/malaria/Uninfected").glob("*.png")).read_bytes()
    data = zip_bytes({"a.png": png, "b.png": png, "labels.csv": b"filename,label\na.png,cat\nb.png,dog\n"}, zipfile.ZIP_STORED)
    at = page("evaluate")
    at.file_uploader(key="evaluate_zip_malaria").set_value(("csv.zip", data, "application/zip"))
    at.run()
    assert_clean(at)
    assert at.error, "labels outside the task must be reported"


def test_evaluate_zip_with_a_separate_label_csv(zip_bytes) -> None:
    files = sorted((ROOT / "examples/malaria").glob("*/*.png"))
    data = zip_bytes({f"img{i}.png": p.read_bytes() for i, p in enumerate(files)}, zipfile.ZIP_STORED)
    rows = "".join(f"img{i}.png,{p.parent.name},patient{i % 2}\n" for i, p in enumerate(files))
    at = page("evaluate")
    at.multiselect(key="evaluate_models_malaria").set_value(["shallow_cnn1"])
    at.file_uploader(key="evaluate_zip_malaria").set_value(("flat.zip", data, "application/zip"))
    at.file_uploader(key="evaluate_csv_malaria").set_value(
        ("labels.csv", f"filename,label,patient_id\n{rows}".encode(), "text/csv")
    )
    at.run()
    assert_clean(at)
    assert metric(at, "Shallow CNN, 1 conv layer", "n") == len(files)
    assert set(frame(at, "confidence")["group"]) == {"patient0", "patient1"}


def test_evaluate_held_out_split_missing_is_explained() -> None:
    at = page("evaluate")
    at.radio(key="evaluate_source").set_value("heldout").run()
    assert_clean(at)
    assert any("test split" in w.value for w in at.warning)


# --------------------------------------------------------------------------- compare, models, reproduction


def test_compare_shallow_vs_deep_measures_latency_and_cam_similarity() -> None:
    at = page("compare")
    at.radio(key="compare_mode").set_value("depth").run()
    at.slider(key="compare_count").set_value(2).run()
    assert_clean(at)
    size = frame(at, "size on disk (MB)")
    assert list(size.index) == ["Shallow CNN, 3 conv layers", "VGG-16"]
    assert size["parameters"].iloc[0] < size["parameters"].iloc[1]
    assert size["CPU ms / image, measured now"].isna().all()  # nothing measured before the click
    at.button(key="compare_measure").click().run()
    assert_clean(at)
    after = frame(at, "size on disk (MB)")  # the frame drawn after the click
    assert (after["CPU ms / image, measured now"] > 0).all()
    cams = frame(at, "rank correlation (Spearman)")
    assert len(cams) == 2 and cams.iloc[:, 2].between(-1, 1).all() and cams.iloc[:, 3].between(0, 1).all()
    assert [m.label for m in at.metric] == ["Images", "Same predicted class", "Cohen's κ"]


def test_compare_prefers_a_stored_same_run_timing_over_after_training_numbers(weights: Path) -> None:
    """After-training latencies depend on what else the machine ran; a same-run timing replaces them."""
    at = page("compare")
    at.radio(key="compare_mode").set_value("depth").run()
    assert_clean(at)
    assert "CPU ms / image, after training" in frame(at, "size on disk (MB)").columns
    assert any("may not compare" in c.value for c in at.caption)
    from medmodels.latency import TIMING_FILE, ModelTiming, TimingRecord

    timing = TimingRecord(task="malaria", threads=1, torch="x", created="2999-01-01T00:00:00+00:00",
                          models={"shallow_cnn3": ModelTiming(3.0), "vgg16": ModelTiming(27.0)}
                          ).write(weights / "malaria" / TIMING_FILE)
    try:
        at.run()
        assert_clean(at)
        size = frame(at, "size on disk (MB)")
        assert list(size["CPU ms / image, timed together (stored)"]) == [3.0, 27.0]
        assert any("timed in one process" in c.value for c in at.caption)
    finally:
        timing.unlink()


def test_compare_teacher_student_without_weights_says_so() -> None:
    at = page("compare")
    assert_clean(at)
    assert any("has trained weights yet" in i.value for i in at.info)


def test_models_page_renders_cards_and_missing_weights() -> None:
    at = page("models")
    assert_clean(at)
    overview = frame(at, "weights")
    assert (overview.set_index("model").loc["shallow_cnn1", "weights"]) == "available"
    at.selectbox(key="models_pick_malaria").set_value("shallow_cnn1").run()
    assert_clean(at)
    assert any("Random weights written for tests" in m.value for m in at.markdown)
    at.selectbox(key="models_pick_malaria").set_value("resnet50").run()
    assert_clean(at)
    assert any("No trained weights yet" in w.value for w in at.warning)


def test_reproduction_page_renders_the_report_of_the_weights_in_use() -> None:
    at = page("reproduction")
    assert_clean(at)
    text = "\n".join(m.value for m in at.markdown)
    assert "## Malaria (Sarkar et al." in text and "## White blood cells" in text
    # the rows come from the (untrained) folders of this test, not from the committed file
    assert "| shallow_cnn3 | **ours** |" in text
    assert "Generated by" not in text and not text.lstrip().startswith("# ")
