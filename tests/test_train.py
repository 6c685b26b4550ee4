"""The training engine: recipes, augmentation, the loop, balancing, losses, splits, CV, CLI."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medmodels.cli import main
from medmodels.data.shared import shared_data_root
from medmodels.train import run as run_mod
from medmodels.train.augment import augment_batch
from medmodels.train.loop import FitConfig, TensorData, epoch_order, fit
from medmodels.train.recipe import AugmentConfig, RecipeError, load_recipe, recipe_from_dict, recipe_of
from medmodels.record import RunRecord
from medmodels.train import pool as pool_mod
from medmodels.train.pool import recipe_pool
from medmodels.train.run import fixed_split, fold_splits, reevaluate, run as run_recipe
from medmodels.zoo.registry import Preprocess

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "name": "tiny", "task": "malaria", "model": "shallow_cnn1", "data": "synthetic",
    "max_images": 24, "input_size": 16, "epochs": 1, "batch_size": 8,
    "split": {"fractions": [0.5, 0.25, 0.25], "seed": 0},
}
PRE = Preprocess(input_size=8)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _logs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(run_mod, "LOG_DIR", tmp_path / "logs")
    monkeypatch.setattr(pool_mod, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(run_mod, "FOLD_CACHE_DIR", tmp_path / "folds")


def split_indices(recipe, pool):
    """The fixed split of a fully labelled pool, as indices."""
    labels = np.asarray(pool.labels, dtype=int)
    return fixed_split(recipe, labels, pool.groups)


def _recipe(**changes):
    data = {**TINY, **changes}
    return recipe_from_dict(data)


# ------------------------------------------------------------------ recipes


def test_every_shipped_recipe_loads_and_names_a_registered_model():
    mine = [p for p in sorted((REPO / "recipes").glob("*.yaml")) if p.name.startswith(("malaria_", "wbc_", "tiny_synthetic", "tiny_malaria"))]
    assert mine
    for path in mine:
        recipe = load_recipe(path)
        entry = run_mod.model_entry(recipe)
        assert entry.task == recipe.task
        if recipe.save_weights and not path.name.startswith("tiny_"):
            assert path.name == f"{recipe.task}_{recipe.name}.yaml", "the card's re-make command relies on it"


def test_unknown_recipe_key_is_refused_with_its_name(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\ntask: malaria\nepochz: 3\n")
    with pytest.raises(RecipeError, match="epochz"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="augment.rotate"):
        _recipe(augment={"rotate": 3})


@pytest.mark.parametrize("changes, needle", [
    ({"loss": "focal"}, "loss"),
    ({"epochs": 0}, "epochs"),
    ({"split": {"fractions": [0.5, 0.5, 0.5]}}, "fractions"),
    ({"epochs": "ten"}, "epochs"),
    ({"freeze_epochs": 5}, "freeze_epochs"),
])
def test_invalid_recipe_values_are_refused(changes, needle):
    with pytest.raises(RecipeError, match=needle):
        _recipe(**changes)


def test_missing_recipe_file_is_a_user_error(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


# ------------------------------------------------------------------ augmentation


def test_augmentation_transforms_each_image_independently():
    img = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    img[:, :, 2:6, 3:12] = 255
    batch = img.repeat(8, 1, 1, 1)
    cfg = AugmentConfig(enabled=True, rotation_deg=30, zoom=0.2, hflip=True, vflip=True,
                        brightness=0.2, color=0.1)
    out = augment_batch(batch, cfg, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    distinct = {tuple(o.flatten().round(decimals=3).tolist()) for o in out}
    assert len(distinct) == 8


def test_saturation_and_contrast_jitter_keep_grey_and_flat_images_and_vary_colour_ones():
    gen = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8).repeat(1, 3, 1, 1)
    sat = AugmentConfig(enabled=True, saturation=0.8)
    out = augment_batch(grey, sat, gen)  # a grey image has no saturation to change
    assert torch.allclose(out, grey.float() / 255, atol=1e-5)
    flat = torch.full((4, 3, 8, 8), 90, dtype=torch.uint8)
    out = augment_batch(flat, AugmentConfig(enabled=True, contrast=0.5), gen)
    assert torch.allclose(out, flat.float() / 255, atol=1e-5)  # nor a flat one contrast
    colour = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    colour[:, 0, :4], colour[:, 2, 4:] = 200, 120
    out = augment_batch(colour.repeat(6, 1, 1, 1), AugmentConfig(enabled=True, saturation=0.8, contrast=0.3), gen)
    assert len({round(float(o.std()), 4) for o in out}) == 6 and 0.0 <= float(out.min()) <= float(out.max()) <= 1.0


def test_disabled_augmentation_only_rescales():
    batch = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(batch, AugmentConfig(enabled=False, rotation_deg=90), torch.Generator())
    assert torch.allclose(out, batch.float() / 255)


# ------------------------------------------------------------------ balancing


def test_oversample_equalises_classes_and_sampler_draws_n():
    labels = np.array([0] * 30 + [1] * 6 + [2] * 4)
    rng = np.random.default_rng(0)
    over = epoch_order(labels, "oversample", rng)
    assert np.bincount(labels[over]).tolist() == [30, 30, 30]
    drawn = np.concatenate([epoch_order(labels, "sampler", rng) for _ in range(50)])
    assert len(drawn) == 50 * len(labels)
    share = np.bincount(labels[drawn]) / len(drawn)
    assert np.all(np.abs(share - 1 / 3) < 0.05)
    plain = epoch_order(labels, "none", rng)
    assert sorted(plain.tolist()) == list(range(len(labels)))


# ------------------------------------------------------------------ the loop


def _tiny_data(n: int = 16, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 100, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    images[labels == 1, :, 2:6, 2:6] = 250
    return TensorData(images, labels)


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def test_early_stopping_restores_the_best_epoch():
    model = _tiny_model()
    scripted = iter([1.0, 0.5, 0.7, 0.8, 0.9, 1.0])
    snapshots: list[dict[str, torch.Tensor]] = []

    def val_loss(logits, y, x, idx):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return torch.tensor(next(scripted))

    result = fit(model, _tiny_data(), _tiny_data(8, 1), PRE,
                 FitConfig(epochs=6, batch_size=16, lr=0.05, early_stopping_patience=2),
                 val_loss_fn=val_loss)
    assert result.best_epoch == 2
    assert result.epochs_run == 4
    assert "early stopping" in result.stop_reason
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k
    assert not torch.equal(snapshots[1]["4.weight"], snapshots[3]["4.weight"])


def test_wall_clock_budget_stops_training():
    result = fit(_tiny_model(), _tiny_data(), _tiny_data(8, 1), PRE,
                 FitConfig(epochs=5, batch_size=8, max_minutes=1e-9))
    assert result.epochs_run == 1
    assert "wall-clock budget" in result.stop_reason


def test_frozen_phase_trains_only_the_head():
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, _tiny_data(), None, PRE,
        FitConfig(epochs=1, batch_size=8, lr=0.1, freeze_epochs=1, head_prefixes=("4.",)))
    after = model.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"])
    assert not torch.equal(before["4.weight"], after["4.weight"])
    assert all(p.requires_grad for p in model.parameters())


def test_custom_loss_receives_the_normalised_batch():
    seen = []

    def loss(logits, y, x, idx):
        seen.append(x.shape)
        return nn.functional.cross_entropy(logits, y)

    fit(_tiny_model(), _tiny_data(), None, PRE, FitConfig(epochs=1, batch_size=8), loss_fn=loss)
    assert seen and all(s[1:] == (3, 8, 8) for s in seen)


# ------------------------------------------------------------------ splits


def test_grouped_split_keeps_groups_disjoint_and_random_split_does_not_care():
    recipe = _recipe(max_images=64)
    pool = recipe_pool(recipe)
    parts = split_indices(recipe, pool)
    groups = {k: {pool.samples[i].group for i in v} for k, v in parts.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(v) for v in parts.values()) == len(pool)
    random = dataclasses.replace(recipe, split=dataclasses.replace(recipe.split, mode="random"))
    rparts = split_indices(random, pool)
    assert sorted(np.concatenate(list(rparts.values())).tolist()) == list(range(len(pool)))


# ------------------------------------------------------------------ end to end


def test_tiny_recipe_end_to_end_through_the_cli(tmp_path):
    out = tmp_path / "tiny"
    assert main(["train", "--recipe", str(REPO / "recipes" / "tiny_synthetic.yaml"), "--out", str(out)]) == 0
    for name in ("model.safetensors", "config.json", "metrics.json", "README.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["name"] == "tiny_synthetic"
    split = metrics["split"]
    assert set(split["train"]["groups"]).isdisjoint(split["test"]["groups"])
    assert RunRecord.read(out).test_groups() == split["test"]["groups"]
    assert metrics["test"]["n"] == split["test"]["n_images"]
    assert sum(r["n"] for r in metrics["test_per_group"]) == metrics["test"]["n"]
    assert {"accuracy", "mcc", "sensitivity", "specificity", "tp", "tn"} <= set(metrics["test"]["metrics"])
    assert metrics["inference_ms"]["ms_per_image_batch1"] > 0
    assert metrics["training"]["seconds"] > 0 and len(metrics["training"]["history"]) == 1
    card = (out / "README.md").read_text()
    assert "not for diagnosis" in card and "Deviations from the paper" in card
    again = reevaluate(out)
    assert again.metrics["accuracy"] == pytest.approx(metrics["test"]["metrics"]["accuracy"])


@pytest.mark.parametrize("balance", ["none", "class_weight", "oversample", "sampler"])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_every_balance_mode_and_loss_trains(tmp_path, balance, loss):
    recipe = _recipe(balance=balance, loss=loss, max_images=16, batch_size=4)
    out = run_recipe(recipe, tmp_path / "m")
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["training"]["history"][0]["train_loss"])
    assert metrics["recipe"]["balance"] == balance and metrics["recipe"]["loss"] == loss


def test_a_half_recipe_stores_fp16_and_scores_the_stored_weights(tmp_path):
    out = run_recipe(_recipe(max_images=16, batch_size=4, half=True), tmp_path / "m")
    record = RunRecord.read(out)
    assert record.recipe["half"] is True
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    assert "computed in float32" in (out / "README.md").read_text()
    assert reevaluate(out).metrics == pytest.approx(record.test.metrics, nan_ok=True)


def test_comparison_run_writes_metrics_only(tmp_path):
    out = run_recipe(_recipe(save_weights=False), tmp_path / "cmp")
    assert (out / "metrics.json").is_file() and not (out / "model.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "metrics-only run" in card and "near chance" not in card


@pytest.mark.parametrize("save_weights", [True, False])
def test_cross_validation_writes_every_fold(tmp_path, save_weights):
    recipe = _recipe(max_images=32, save_weights=save_weights,
                     split={"fractions": [0.75, 0.25, 0.0], "seed": 0, "cv_folds": 2})
    out = run_recipe(recipe, tmp_path / "cv")
    assert (out / "model.safetensors").is_file() == save_weights
    metrics = json.loads((out / "metrics.json").read_text())
    folds = metrics["cv"]["folds"]
    assert len(folds) == 2
    tests = [set(f["split"]["test"]["groups"]) for f in folds]
    assert tests[0].isdisjoint(tests[1])
    assert metrics["cv"]["mean"]["accuracy"] is not None
    assert np.sum(metrics["cv"]["confusion_matrix_sum"]) == 32
    card = (out / "README.md").read_text()  # with or without weights, the card has every fold
    assert "## Cross-validation" in card and "Mean ± standard deviation over folds" in card
    assert card.count("\n| 1 |") == 1 and card.count("\n| 2 |") == 1
    assert "This is the split of the last fold (2 of 2)" in card
    assert ("weights of that epoch are shipped" in card) == save_weights


def test_development_cross_validation_never_touches_the_fixed_test_groups():
    from medmodels.data.samples import LabelledSet, Sample

    rng = np.random.default_rng(0)
    groups = [f"slide{g}" for g in rng.integers(0, 30, size=600)]
    labels = rng.integers(0, 2, size=600)
    split = {"fractions": [0.7, 0.1, 0.2], "seed": 3, "cv_folds": 4, "cv_scope": "development"}
    recipe = _recipe(split=split)
    pool = LabelledSet([Sample(name=f"{i}.png", source=b"", label=int(y), group=g)
                        for i, (y, g) in enumerate(zip(labels, groups))], ("a", "b"))
    fixed_test = {groups[i] for i in split_indices(recipe, pool)["test"]}
    folds = fold_splits(recipe, labels, groups)
    assert len(folds) == 4
    fold_tests = [{groups[i] for i in f["test"]} for f in folds]
    seen = [g for part in folds for name in ("train", "val", "test") for g in (groups[i] for i in part[name])]
    assert fixed_test.isdisjoint(seen)
    assert sorted(g for t in fold_tests for g in t) == sorted(set(groups) - fixed_test)  # each once
    for f in folds:
        assert {groups[i] for i in f["train"]}.isdisjoint({groups[i] for i in f["test"]})
    with pytest.raises(RecipeError, match="cv_scope"):
        _recipe(split={**split, "cv_folds": 0})


@pytest.mark.skipif(shared_data_root() is None, reason="../shared/data is absent")
def test_tiny_recipe_on_the_shared_malaria_images(tmp_path):
    out = tmp_path / "shared"
    assert main(["train", "--recipe", str(REPO / "recipes" / "tiny_malaria.yaml"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    split = metrics["split"]
    assert set(split["train"]["groups"]).isdisjoint(split["test"]["groups"])
    assert all("_IMG" not in g for g in split["test"]["groups"]), "groups are slides, not images"


def test_plateau_schedule_lowers_the_learning_rate():
    scripted = iter([1.0, 1.1, 1.2, 1.3, 1.4])
    result = fit(_tiny_model(), _tiny_data(), _tiny_data(8, 1), PRE,
                 FitConfig(epochs=5, batch_size=16, lr=0.01, lr_schedule="plateau", lr_factor=0.5,
                           lr_patience=1),
                 val_loss_fn=lambda logits, y, x, idx: torch.tensor(next(scripted)))
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] < lrs[0]


def test_balanced_validation_loss_weights_classes_equally():
    recipe = _recipe(val_loss="balanced")
    _, val_fn = run_mod.build_loss(recipe, np.array([0, 1, 0, 1]), 2, np.array([0, 0, 0, 1]))
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 0, 0, 1])
    per = nn.functional.cross_entropy(logits, y, reduction="none")
    expected = (per[:3].mean() + per[3]) / 2
    assert float(val_fn(logits, y, logits, np.arange(len(y)))) == pytest.approx(float(expected))
    _, plain = run_mod.build_loss(_recipe(), np.array([0, 1]), 2, np.array([0, 0, 0, 1]))
    assert float(plain(logits, y, logits, np.arange(len(y)))) == pytest.approx(float(per.mean()))


def test_every_shipped_cell_model_file_is_at_most_60_mb():
    files = [p for task in ("malaria", "wbc") for p in (REPO / "weights" / task).glob("*/model.safetensors")]
    for path in files:
        assert path.stat().st_size <= 60 * 1000 * 1000, f"{path} is {path.stat().st_size / 1e6:.1f} MB"


def test_every_shipped_cell_model_has_its_recipe_and_split():
    for task in ("malaria", "wbc"):
        for metrics_file in (REPO / "weights" / task).glob("*/metrics.json"):
            record = RunRecord.read(metrics_file)
            recipe_file = REPO / "recipes" / f"{task}_{record.name}.yaml"
            assert recipe_file.is_file(), recipe_file
            assert recipe_of(record) == load_recipe(recipe_file), (
                f"{recipe_file.name} changed since {metrics_file} was trained: re-train or revert"
            )
            assert record.split.mode == "grouped"
            assert record.test_groups(), metrics_file
            assert set(record.split.train.groups).isdisjoint(record.test_groups())


def test_a_half_recipe_is_measured_with_the_weights_it_stores() -> None:
    from medmodels.train.run import round_to_half

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    with torch.no_grad():
        model[0].weight.add_(1e-4 * torch.randn_like(model[0].weight))
    round_to_half(model)
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, tensor.half().float())


def test_rewriting_a_card_from_metrics_on_disk_changes_nothing(tmp_path):
    from medmodels.train.run import write_card

    out = run_recipe(_recipe(), tmp_path / "m")
    written_by_training = (out / "README.md").read_text()
    write_card(out)
    assert (out / "README.md").read_text() == written_by_training
