"""The chest X-ray recipes through the one engine: grouped folds, imputation kept out of test
folds, the CV layout, audits, report and card sections."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medmodels.data.shared import shared_data_root
from medmodels.report.reproduction import write_cards
from medmodels.train import run as run_mod
from medmodels.train.pool import recipe_pool, synthetic_xrays
from medmodels.train.recipe import RecipeError, load_recipe
from medmodels.train.run import cumulative_rates, imputed_training_labels, recipe_splits, run

REPO = Path(__file__).resolve().parents[1]
TINY_MORTALITY = REPO / "recipes" / "tiny_mortality_imputed.yaml"


@pytest.fixture(scope="module")
def mortality_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_mod, "LOG_DIR", tmp / "logs")
        return run(load_recipe(TINY_MORTALITY), tmp / "weights" / "mortality" / "resnet18_imputed")


def _folds(recipe, pool):
    return recipe_splits(recipe, pool)


def test_cumulative_rates_by_hand() -> None:
    # rows = truth (survived, died), columns = prediction; positive class "died" = index 1
    rates = cumulative_rates([[30, 5], [2, 8]], positive_index=1)
    assert (rates["tp"], rates["tn"], rates["fp"], rates["fn"]) == (8, 30, 5, 2)
    assert rates["tpr"] == pytest.approx(0.8)
    assert rates["tnr"] == pytest.approx(30 / 35)
    assert rates["fpr"] == pytest.approx(5 / 35)
    assert rates["fnr"] == pytest.approx(0.2)


def test_folds_are_patient_disjoint_and_skip_unlabelled() -> None:
    recipe = load_recipe(TINY_MORTALITY)
    pool = synthetic_xrays("mortality", 60, 0)
    folds = _folds(recipe, pool)
    tests = np.concatenate([f["test"] for f in folds])
    labelled = [i for i, s in enumerate(pool.samples) if s.label is not None]
    assert sorted(tests.tolist()) == labelled  # every labelled image is tested exactly once
    for f in folds:
        groups = {p: {pool.samples[i].group for i in f[p]} for p in ("train", "val", "test")}
        assert not groups["train"] & groups["test"]
        assert not groups["val"] & groups["test"]


def test_imputation_never_reaches_the_test_fold() -> None:
    recipe = load_recipe(TINY_MORTALITY)
    pool = synthetic_xrays("mortality", 60, 0)
    split = _folds(recipe, pool)[0]
    train, labels, report = imputed_training_labels(pool, split, seed=0)
    test_groups = {pool.samples[i].group for i in split["test"]}
    assert not {pool.samples[i].group for i in train} & test_groups
    n_real = report.n_real
    assert labels[:n_real].tolist() == [pool.samples[i].label for i in split["train"]]
    assert all(pool.samples[i].label is None for i in train[n_real:])
    assert report.n_imputed == len(train) - n_real > 0


def test_cv_layout_and_predictions(mortality_run: Path) -> None:
    metrics = json.loads((mortality_run / "metrics.json").read_text())
    for key in ("recipe", "split", "training", "test", "inference_ms", "cv"):
        assert key in metrics
    cv = metrics["cv"]
    assert len(cv["folds"]) == 3 and cv["n_folds"] == 3
    for key in ("mean", "std", "confusion_matrix_sum", "roc_mean", "pr_mean", "cumulative_rates"):
        assert cv[key] is not None, key
    for curve in ("roc_mean", "pr_mean"):
        assert {"x", "y", "y_std", "auc", "auc_std"} <= set(cv[curve])
    cm = np.asarray(cv["confusion_matrix_sum"])
    assert cm.sum() == sum(f["test"]["n"] for f in cv["folds"])
    with (mortality_run / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "patient", "label", "score_survived", "score_died", "fold"]
    pool = synthetic_xrays("mortality", 80, 0)
    unlabelled = {s.name for s in pool.samples if s.label is None}
    assert not unlabelled & {r["file"] for r in rows}  # test folds hold real labels only
    assert len(rows) == cm.sum()


def test_report_sections(mortality_run: Path) -> None:
    from medmodels.report.xray import xray_report_sections

    kd, mortality = xray_report_sections(mortality_run.parents[1])
    assert "No COVID-19 model" in kd
    assert "resnet18_imputed" in mortality and "paper" in mortality


def test_fold_options_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_MORTALITY.read_text().replace("ship: all_data", "ship: all_data, folds_typo: 1"))
    with pytest.raises(RecipeError, match="folds_typo"):
        load_recipe(bad)
    bad.write_text(TINY_MORTALITY.read_text().replace("cv_folds: 3, ", ""))
    with pytest.raises(RecipeError, match="cv_folds >= 2"):
        load_recipe(bad)


def test_shipped_xray_recipes_load() -> None:
    for path in sorted((REPO / "recipes").glob("covid_*.yaml")) + sorted((REPO / "recipes").glob("mortality_*.yaml")):
        recipe = load_recipe(path)
        assert path.name == f"{recipe.task}_{recipe.name}.yaml"
        assert recipe.split.cv_folds == 5 and recipe.split.ship in ("fold1", "all_data")


@pytest.mark.skipif(shared_data_root() is None, reason="../shared/data is not available")
def test_real_covid_folds_keep_patients_and_actualmed_apart() -> None:
    from medmodels.data.shared import covid_samples

    recipe = load_recipe(REPO / "recipes" / "covid_mobilenet_v2.yaml")
    pool = recipe_pool(recipe)
    external = covid_samples(external=True)
    assert not {s.group for s in pool.samples} & {s.group for s in external.samples}
    assert len(external) == 44
    for f in _folds(recipe, pool):
        groups = {p: {pool.samples[i].group for i in f[p]} for p in ("train", "val", "test")}
        assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]


def test_view_shortcut_counts_only_labelled_images() -> None:
    from medmodels.train.audit import view_shortcut

    pool = synthetic_xrays("mortality", 40, 0)
    result = view_shortcut(pool)
    labelled = [s for s in pool.samples if s.label is not None]
    assert sum(v["images"] for v in result.per_view.values()) == len(labelled)
    assert result.roc_auc == pytest.approx(0.5)  # no view recorded: the view says nothing


def test_refreshed_card_says_when_the_weights_file_is_absent(tmp_path: Path) -> None:
    """A card regenerated from metrics.json keeps stating that no weights are shipped."""
    src = Path(__file__).resolve().parents[1] / "weights" / "mortality" / "resnet18_imputed"
    folder = tmp_path / "mortality" / "resnet18_imputed"
    folder.mkdir(parents=True)
    shutil.copy(src / "metrics.json", folder / "metrics.json")
    assert write_cards(tmp_path) == [folder]
    card = (folder / "README.md").read_text()
    assert "## Weights not shipped" in card
    assert "recipes/mortality_resnet18_imputed.yaml" in card
    (folder / "model.safetensors").write_bytes(b"")  # a folder with weights gets no such section
    write_cards(tmp_path)
    assert "Weights not shipped" not in (folder / "README.md").read_text()


@pytest.mark.parametrize(("name", "says", "never"), [
    ("resnet18_imputed", "near chance", "metrics-only run"),  # trained to keep, withdrawn
    ("swin", "metrics-only run", "near chance"),  # a Table 2 comparison run, save_weights: false
])
def test_refreshed_card_gives_the_right_reason_for_absent_weights(
        tmp_path: Path, name: str, says: str, never: str) -> None:
    src = Path(__file__).resolve().parents[1] / "weights" / "mortality" / name
    folder = tmp_path / "mortality" / name
    folder.mkdir(parents=True)
    shutil.copy(src / "metrics.json", folder / "metrics.json")
    write_cards(tmp_path)
    status = (folder / "README.md").read_text().split("## Weights not shipped", 1)[1]
    assert says in status and never not in status


def test_xray_card_has_one_cross_validation_section(tmp_path: Path) -> None:
    """The X-ray card writes its own CV table (shipped fold 1); the generic one stays out."""
    src = Path(__file__).resolve().parents[1] / "weights" / "covid" / "mobilenet_v2"
    folder = tmp_path / "covid" / "mobilenet_v2"
    folder.mkdir(parents=True)
    shutil.copy(src / "metrics.json", folder / "metrics.json")
    write_cards(tmp_path)
    card = (folder / "README.md").read_text()
    assert card.count("Cross-validation") == 1 and "results above are those of the last fold" not in card
