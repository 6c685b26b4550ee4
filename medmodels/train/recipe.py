"""Training recipes: one frozen dataclass per shipped weight, loaded from a small YAML file.

A recipe holds every knob that changes the weights, so that ``python -m medmodels train
--recipe recipes/<file>.yaml`` re-makes a shipped model and the recipe is written, as a
dict, into its ``metrics.json``. Unknown keys are refused: a typo must not silently fall
back to a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medmodels.errors import MedModelsError


class RecipeError(MedModelsError):
    """A recipe file is missing, malformed, or has an unknown or invalid setting."""


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of the training images (rotation, zoom, shift, flips, brightness, colour).

    ``saturation`` and ``contrast`` blend each image with its grey version and with its mean
    grey level by a factor from [1 - x, 1 + x] (torchvision's ColorJitter semantics): stain
    strength, not only stain hue, differs between slides.
    """

    enabled: bool = False
    rotation_deg: float = 0.0
    zoom: float = 0.0  # scale drawn from [1 - zoom, 1 + zoom]
    hflip: bool = False
    vflip: bool = False
    brightness: float = 0.0  # factor drawn from [1 - brightness, 1 + brightness]
    color: float = 0.0  # per-channel gain from [1 - color, 1 + color]: stain differences between slides
    translate: float = 0.0  # fraction of the side, each direction
    saturation: float = 0.0
    contrast: float = 0.0


@dataclass(frozen=True)
class SplitConfig:
    """How the samples are split into train / validation / test, always by group.

    ``fractions`` are (train, val, test). ``mode="random"`` splits by image and exists only
    to demonstrate the leak of near-duplicate augmentations (WBC); never use it for a model
    that is shipped. ``cv_folds`` > 0 runs grouped k-fold cross-validation instead (see
    ``medmodels.train.run``); then ``fractions`` only sets the validation share of each
    training fold. ``cv_scope="development"`` keeps the test groups of the fixed split (the
    one ``fractions`` and ``seed`` make without ``cv_folds``) out of every fold, so that
    recipe variants can be compared by cross-validation without looking at that test split.
    """

    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 42
    mode: Literal["grouped", "random"] = "grouped"
    cv_folds: int = 0
    cv_scope: Literal["all", "development"] = "all"
    # How many of the cv_folds folds to train (0 = all; 1 = fold 1 only, a plain held-out run).
    run_folds: int = 0
    # Which model a cross-validated recipe ships and whose numbers fill the record's ``test``:
    # ``last_fold``; ``fold1`` (its test part is the held-out split, e.g. the one a teacher
    # trained beside); ``all_data`` (refit on every labelled image; ``test`` then holds the
    # pooled out-of-fold predictions of the fold models).
    ship: Literal["last_fold", "fold1", "all_data"] = "last_fold"


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from a trained teacher (a registry name of the same task)."""

    teacher: str
    temperature: float = 4.0
    alpha: float = 0.5
    # ``online``: the teacher sees every augmented batch (the paper). ``cached``: its logits
    # are computed once on the un-augmented images and each batch is matched with its own
    # images' logits (a CPU shortcut).
    teacher_logits: Literal["online", "cached"] = "online"


@dataclass(frozen=True)
class Recipe:
    """Everything that determines one trained weight.

    ``name`` is the weights folder (normally the registry model name, e.g.
    ``shallow_cnn3_noaug``); ``model`` is the registry name whose architecture and
    preprocessing are used. ``data`` selects the sample set: ``"shared"`` (the task's
    ``../shared/data`` set with group ids), ``"wbc_cell_copies"`` (augmented copies of the WBC
    crops, grouped by original: the leak demonstration), ``"wbc_augmented"`` (the Kaggle-style
    augmented whole smears, no groups) or ``"synthetic"`` (generated images, for CI only).
    """

    name: str
    task: str
    model: str = ""
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "plateau"] = "constant"
    lr_factor: float = 0.3  # plateau: multiply the lr by this ...
    lr_patience: int = 3  # ... after this many epochs without validation-loss improvement
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    balance: Literal["none", "class_weight", "oversample", "sampler"] = "none"
    loss: Literal["ce", "margin"] = "ce"
    freeze_epochs: int = 0
    freeze_lr: float | None = None
    early_stopping_patience: int = 0  # 0 = off; best checkpoint by val loss is always kept
    # > 0: re-estimate batch-norm statistics on this many training images, dropout off,
    # before each validation (QuadSNet: dropout after every block skews them otherwise)
    recalibrate_bn: int = 0
    # "balanced": the validation loss weights each class equally (by its share of the
    # validation part), so that a by-group split that leaves the validation part skewed
    # does not pick the checkpoint that favours the majority class.
    val_loss: Literal["plain", "balanced"] = "plain"
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    max_images: int = 0  # 0 = all (small values make the CI recipes)
    max_minutes: float = 0.0  # 0 = no wall-clock budget
    distill: DistillConfig | None = None
    labels: Literal["original", "imputed"] = "original"
    data: Literal["shared", "wbc_augmented", "wbc_cell_copies", "synthetic"] = "shared"
    input_size: int = 0  # 0 = the registry's input size for ``model``
    save_weights: bool = True
    half: bool = False  # store fp16 safetensors (large models)
    threads: int = 1
    audit: bool = True  # run the task's registered shortcut audits on the shipped model
    # "lung_only": chest X-rays cropped to the predicted lung field and black outside it
    # (medmodels.lungs.lung_only_set), in training, testing and the audits (issue 19)
    inputs: Literal["full", "lung_only"] = "full"
    # "imagenet": start from the architecture's ImageNet weights (only those read offline from an
    # installed package, e.g. efficientnet_lite0); "random": from scratch, as the papers' rows here
    init: Literal["random", "imagenet"] = "random"
    notes: str = ""

    @property
    def model_name(self) -> str:
        return self.model or self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn a YAML value into the type the dataclass field declares, or say what is wrong."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise RecipeError(f"Recipe setting {where!r} must be a mapping, got {value!r}.")
        return _build(hint, value, where + ".")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise RecipeError(f"Recipe setting {where!r} is {value!r}; choose one of {choices}.")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"Recipe setting {where!r} must be a list, got {value!r}.")
        return tuple(float(v) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"Recipe setting {where!r} must be true or false, got {value!r}.")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"Recipe setting {where!r} must be a number, got {value!r}.")
        if hint is int and float(value) != int(value):
            raise RecipeError(f"Recipe setting {where!r} must be a whole number, got {value!r}.")
        return hint(value)
    if hint is str:
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _field_types(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        known = ", ".join(sorted(hints))
        raise RecipeError(
            f"Unknown recipe setting(s) {', '.join(prefix + k for k in unknown)}; "
            f"known settings{' of ' + prefix.rstrip('.') if prefix else ''}: {known}."
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise RecipeError(f"Recipe {prefix.rstrip('.') or 'file'} is incomplete: {err}.") from None


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and validate a ``Recipe`` from plain data (a parsed YAML/JSON file)."""
    if not isinstance(data, dict):
        raise RecipeError("A recipe file must hold a mapping of settings (key: value).")
    recipe = _build(Recipe, data)
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    """Refuse settings that cannot work together, before any data is read."""
    fr = recipe.split.fractions
    if len(fr) != 3 or abs(sum(fr) - 1.0) > 1e-6 or min(fr) < 0 or fr[0] <= 0:
        raise RecipeError(
            f"split.fractions must be three non-negative shares (train, val, test) summing to 1, "
            f"got {list(fr)}."
        )
    if recipe.epochs < 1:
        raise RecipeError(f"epochs must be at least 1, got {recipe.epochs}.")
    if recipe.batch_size < 1:
        raise RecipeError(f"batch_size must be at least 1, got {recipe.batch_size}.")
    if not 0 <= recipe.freeze_epochs <= recipe.epochs:
        raise RecipeError(
            f"freeze_epochs must lie between 0 and epochs ({recipe.epochs}), got {recipe.freeze_epochs}."
        )
    if recipe.split.cv_scope == "development" and (recipe.split.cv_folds < 2 or fr[2] <= 0):
        raise RecipeError(
            "split.cv_scope 'development' needs cv_folds >= 2 and a test share in split.fractions "
            "(the fixed test split it keeps out of the folds)."
        )
    if recipe.split.ship != "last_fold" and recipe.split.cv_folds < 2:
        raise RecipeError(f"split.ship {recipe.split.ship!r} needs split.cv_folds >= 2.")
    if recipe.split.run_folds and recipe.split.ship == "last_fold":
        raise RecipeError("split.run_folds needs split.ship fold1 or all_data (the last fold may not run).")
    if recipe.distill is not None and not 0.0 <= recipe.distill.alpha <= 1.0:
        raise RecipeError(f"distill.alpha must lie in [0, 1], got {recipe.distill.alpha}.")


def read_recipe_mapping(path: Path) -> dict[str, Any]:
    """The settings mapping of a YAML (or JSON) recipe file, or a clear ``RecipeError``."""
    if not path.is_file():
        raise RecipeError(f"Recipe file not found: {path}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"Recipe {path.name} is not valid YAML: {err}.") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path.name}: a recipe file must hold a mapping of settings.")
    return data


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a YAML (or JSON) file."""
    path = Path(path)
    data = read_recipe_mapping(path)
    try:
        return recipe_from_dict(data)
    except RecipeError as err:
        raise RecipeError(f"{path.name}: {err}") from None


def recipe_of(record: Any) -> Recipe:
    """The ``Recipe`` of a run record (``medmodels.record.RunRecord``); settings added since read as their defaults."""
    if record.recipe is None:
        raise RecipeError(f"{record.task}/{record.name}: the run record holds no recipe (an untrained folder).")
    return recipe_from_dict(record.recipe)
