"""Localisation scores on maps with known answers, box handling, and the lung model's contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medmodels.data.cell_crops import Box, cell_crop
from medmodels.explain.localise import (
    NO_POSITIVE_NOTE,
    PixelBox,
    box_from_meta,
    box_in_crop,
    box_mask,
    box_problem,
    box_score,
    box_to_view,
    dilate,
    lung_scores,
    positive_share,
)
from medmodels.lungs import NOT_FOUND_NOTE, LungField, segment_batch
from medmodels.zoo.registry import Preprocess


def _region(shape=(64, 64)) -> np.ndarray:
    r = np.zeros(shape, bool)
    r[10:30, 20:50] = True
    return r


def test_map_wholly_inside_scores_one() -> None:
    region = _region()
    a = np.where(region, np.random.default_rng(0).random(region.shape), 0.0)
    s = positive_share(a, region)
    assert s.inside == pytest.approx(1.0)
    assert s.chance == pytest.approx(region.mean())


def test_uniform_map_scores_the_region_share() -> None:
    region = _region()
    s = positive_share(np.ones(region.shape), region)
    assert s.inside == pytest.approx(region.mean())
    assert s.ratio == pytest.approx(1.0)


def test_all_zero_map_is_reported_not_divided() -> None:
    s = positive_share(np.zeros((64, 64)), _region())
    assert s.inside is None and s.note == NO_POSITIVE_NOTE and s.ratio is None
    assert NO_POSITIVE_NOTE in s.text()
    neg = positive_share(-np.ones((64, 64)), _region())  # only evidence against the class
    assert neg.inside is None


def test_negative_attribution_is_left_out_and_region_resized() -> None:
    region = _region((32, 32))
    a = -np.ones((64, 64))
    big = np.kron(region, np.ones((2, 2), bool))
    a[big] = 2.0
    s = positive_share(a, region)  # region at half the map's resolution
    assert s.inside == pytest.approx(1.0)


def test_box_score_and_frames() -> None:
    pre = Preprocess(input_size=100)
    view = box_to_view(PixelBox(40, 30, 80, 60), (200, 100), pre)  # squash: x/2, y
    assert (view.x0, view.y0, view.x1, view.y1) == (20, 30, 40, 60)
    a = np.zeros((100, 100))
    a[35:55, 25:35] = 1.0
    assert box_score(a, view).inside == pytest.approx(1.0)
    assert box_score(np.ones((100, 100)), view).inside == pytest.approx(box_mask(view, (100, 100)).mean())
    padded = box_to_view(PixelBox(0, 0, 100, 50), (100, 50), Preprocess(input_size=100, resize="pad_square"))
    assert (padded.y0, padded.y1) == (25, 75)


def test_bad_boxes_are_reported() -> None:
    assert box_problem(10, 10, 5, 20, 100, 100) and "x1 <= x0" in box_problem(10, 10, 5, 20, 100, 100)
    assert "outside" in box_problem(-5, 0, 20, 20, 100, 100)
    assert "outside" in box_problem(0, 0, 120, 20, 100, 100)
    assert box_problem(0, 0, 100, 100, 100, 100) is None
    assert box_from_meta({"patient_id": "x"}, (100, 100)) == (None, None)
    assert box_from_meta({"x0": "1", "y0": "2", "x1": "", "y1": "4"}, (100, 100))[1]
    assert "not a number" in box_from_meta({"x0": "a", "y0": "2", "x1": "3", "y1": "4"}, (100, 100))[1]
    box, problem = box_from_meta({"X0": "1", "y0": "2", "x1": "30", "y1": "40"}, (100, 100))
    assert problem is None and box == PixelBox(1, 2, 30, 40)


def test_box_in_crop_matches_the_crop() -> None:
    img = Image.new("RGB", (640, 480))
    box = Box("WBC", 100, 200, 180, 260)
    crop = cell_crop(img, box)
    inner = box_in_crop(box, img.size)
    assert crop.width == crop.height == round(1.3 * 80)
    assert inner.x1 - inner.x0 == 80 and inner.y1 - inner.y0 == 60
    edge = box_in_crop(Box("WBC", 0, 0, 50, 50), img.size)  # crop shifted to stay inside
    assert (edge.x0, edge.y0) == (0, 0)


def _field(mask: np.ndarray, plausible: bool = True) -> LungField:
    return LungField(mask.astype(np.float32), mask, (mask.shape[1], mask.shape[0]), float(mask.mean()),
                     plausible, (0.1, 0.6))


def test_lung_scores_plain_dilated_and_not_found() -> None:
    mask = np.zeros((256, 256), bool)
    mask[60:200, 40:120] = mask[60:200, 140:220] = True
    field = _field(mask)
    plain, wide = lung_scores(np.ones((128, 128)), field)
    assert plain.inside == pytest.approx(mask.mean(), abs=0.01)
    assert wide.chance > plain.chance and wide.inside > plain.inside
    assert dilate(mask[::2, ::2]).sum() > mask[::2, ::2].sum()
    bad = _field(np.zeros((256, 256), bool), plausible=False)
    for s in lung_scores(np.ones((128, 128)), bad):
        assert s.inside is None and NOT_FOUND_NOTE in s.note


class _Const(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, x.shape[2], x.shape[3]), self.value)


def test_lung_model_shape_range_and_flag_on_a_synthetic_image() -> None:
    from medmodels.zoo.unet import UNET_LITE0, unet_lite0

    torch.manual_seed(0)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200), dtype=np.uint8))
    field = segment_batch(unet_lite0().eval(), [img])[0]
    s = UNET_LITE0.preprocess.input_size
    assert field.probability.shape == field.mask.shape == (s, s)
    assert field.probability.min() >= 0 and field.probability.max() <= 1
    assert field.image_mask().shape == (300, 200)
    assert 0 <= field.area_fraction <= 1
    everything = segment_batch(_Const(10.0), [img])[0]
    nothing = segment_batch(_Const(-10.0), [img])[0]
    assert everything.area_fraction == pytest.approx(1.0) and not everything.plausible
    assert nothing.area_fraction == 0 and not nothing.plausible and NOT_FOUND_NOTE in nothing.note
    half = _Const(0.0)  # probability exactly 0.5 -> not lung
    assert segment_batch(half, [img])[0].area_fraction == 0


def test_every_bundled_wbc_example_has_its_cell_box() -> None:
    from pathlib import Path

    from medmodels.explain.localise import bundled_box

    files = sorted((Path(__file__).resolve().parents[1] / "examples" / "wbc").glob("*/*.png"))
    assert files
    for path in files:
        image = Image.open(path)
        box = bundled_box(image)
        assert box is not None, path.name
        assert box_problem(box.x0, box.y0, box.x1, box.y1, *image.size) is None
    assert bundled_box(Image.new("RGB", (50, 50))) is None  # same name or not: pixels decide


SHIPPED_LUNGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "weights" / "lungs" / "unet_lite0"


@pytest.mark.skipif(not (SHIPPED_LUNGS / "model.safetensors").is_file(), reason="lung model not shipped here")
def test_shipped_lung_model_on_a_bundled_xray_and_the_cli(tmp_path, capsys) -> None:
    import json
    from pathlib import Path

    from medmodels.cli import main
    from medmodels.data.images import load_image
    from medmodels.lungs import load_lung_model, segment_lungs

    xray = sorted((Path(__file__).resolve().parents[1] / "examples" / "covid" / "Normal").glob("*.jpg"))[0]
    model, metrics = load_lung_model(SHIPPED_LUNGS)
    assert metrics["scores"]["test"]["dice_mean"] >= 0.95
    field = segment_lungs(load_image(xray), model)
    assert field.plausible and 0.1 < field.area_fraction < 0.6
    assert main(["segment-lungs", str(xray), "--json", "--out", str(tmp_path)]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["plausible"] and (tmp_path / f"{xray.stem}_lungs.png").is_file()


def test_segment_lungs_cli_without_weights_says_so(monkeypatch, tmp_path, capsys) -> None:
    from medmodels.cli import main

    monkeypatch.setenv("MEDMODELS_WEIGHTS_DIR", str(tmp_path))
    xray = sorted((SHIPPED_LUNGS.parents[2] / "examples" / "covid" / "Normal").glob("*.jpg"))[0]
    assert main(["segment-lungs", str(xray)]) == 2
    assert "No trained lung-field model" in capsys.readouterr().err


def test_lung_only_crops_and_blacks_out() -> None:
    from medmodels.lungs import lung_only

    mask = np.zeros((256, 256), bool)
    mask[60:200, 40:120] = True
    img = Image.fromarray(np.full((256, 256), 200, np.uint8))
    out = np.asarray(lung_only(img, _field(mask)))
    assert out.shape[0] < 256 and out.shape[1] < 256  # cropped around the field
    assert out[..., 0].max() == 200 and out[..., 0].min() == 0  # outside the field is black
    with pytest.raises(ValueError):
        lung_only(img, _field(mask, plausible=False))


@pytest.mark.skipif(not (SHIPPED_LUNGS / "model.safetensors").is_file(), reason="lung model not shipped here")
def test_lung_only_set_replaces_images_and_keeps_labels_and_groups() -> None:
    from pathlib import Path

    from medmodels.data.datasets import read_labelled_set
    from medmodels.data.images import load_image
    from medmodels.lungs import lung_only_set

    data = read_labelled_set(Path(__file__).resolve().parents[1] / "examples" / "covid", ("COVID-19", "Normal"))
    out = lung_only_set(data)
    assert len(out.samples) == len(data.samples)
    for before, after in zip(data.samples, out.samples):
        assert (after.name, after.label, after.group) == (before.name, before.label, before.group)
        assert after.meta["inputs"] == "lung_only" and isinstance(after.source, bytes)
        assert load_image(after.source).size[0] < load_image(before.source).size[0]  # cropped


def test_report_tables_from_survey_records(tmp_path) -> None:
    import json

    from medmodels.explain.localise_survey import localisation_table, lung_only_rows, lung_only_table, lung_only_verdict

    assert localisation_table(tmp_path) == "" and lung_only_table(tmp_path) == ""
    (tmp_path / "covid" / "mobilenet_v2" / "mobilenet_v2_lungs").mkdir(parents=True)
    method = {"n_images": 10, "n_scored": 9, "not_computed": {"lung field not found; score not computed": 1},
              "inside_mean": 0.3, "chance_mean": 0.2, "ratio_mean": 1.5, "dilated_inside_mean": 0.4,
              "dilated_chance_mean": 0.3}
    record = {"task": "covid", "region": "lung field", "models": {
        "mobilenet_v2": {"methods": {"gradcam": method}}, "mobilenet_v2_lungs": {"methods": {"gradcam": method}}},
        "skipped": {"quadsnet": "no held-out test split"}}
    (tmp_path / "covid" / "localisation.json").write_text(json.dumps(record))
    table = localisation_table(tmp_path)
    assert "| covid | mobilenet_v2 | Grad-CAM | 9 of 10 | 30 % (40 %) | 20 % | 1.50 |" in table
    assert "not surveyed: no held-out test split" in table
    import dataclasses

    from medmodels.record import Audits, RunRecord

    shipped = RunRecord.read(Path(__file__).resolve().parents[1] / "weights" / "covid" / "mobilenet_v2")
    for folder, acc in (("mobilenet_v2", 0.9), ("mobilenet_v2/mobilenet_v2_lungs", 0.8)):
        test = dataclasses.replace(shipped.test, metrics={"balanced_accuracy": acc, "roc_auc": acc})
        actualmed = dataclasses.replace(shipped.test, metrics={"balanced_accuracy": 0.5, "roc_auc": 0.5})
        dataclasses.replace(shipped, test=test, audit=Audits(actualmed=actualmed)).write(tmp_path / "covid" / folder)
    rows = lung_only_rows(tmp_path)
    assert [r["inputs"] for r in rows] == ["full", "lung-only"] and rows[1]["gradcam_inside_lungs"] == 0.3
    assert "fell from 0.900 to 0.800" in lung_only_verdict(rows) and "did not gain" in lung_only_verdict(rows)
    assert "Lung-only inputs" in localisation_table(tmp_path)
