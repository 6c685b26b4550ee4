"""The two chest X-ray studies: COVID-19 vs normal (distillation) and COVID-19 mortality.

What the engine's ``run_recipe``/``run_cv`` do not do, and this module adds:

- patient-grouped k-fold CV whose fold 1 *is* the held-out split of the shipped weight
  (so the teacher, trained once on fold 1's training part, has never seen fold 1's test
  images, and the students' fold-1 numbers are directly comparable with it);
- distillation from cached (or online) teacher logits (:mod:`medmodels.train.distill`);
- label imputation fitted on each fold's training rows only; test folds hold real labels;
- ``predictions.csv`` next to the weights, and ``cv`` (per-fold metrics, mean, std,
  cumulative confusion matrix, fold-averaged ROC and PR curves) in metrics.json;
- the shortcut audit: accuracy on the Actualmed subset (the only source with both
  classes, never trained on) and a classifier that predicts the image *source*.

Recipe files are ordinary engine recipes plus an optional ``xray:`` mapping
(:class:`XrayOptions`). ``python -m medmodels.train.xray --recipe recipes/covid_*.yaml``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Literal

import numpy as np
import torch
import yaml
from torch import nn

from medmodels.csv_safety import write_rows
from medmodels.data.samples import LabelledSet, Sample
from medmodels.train.loop import FitResult, TensorData, fit
from medmodels.train.recipe import Recipe, RecipeError, read_recipe_mapping, recipe_from_dict
from medmodels.train.run import (
    CACHE_DIR,
    LOG_DIR,
    WEIGHTS_DIR,
    build_loss,
    decode_all,
    fit_config,
    inference_times,
    machine_info,
    model_entry,
    probabilities,
    run_log,
    split_summary,
)
from medmodels.zoo.registry import ModelEntry, build_arch, count_parameters

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
AUDIT_PREDICTIONS_FILE = "audit_predictions.csv"
SOURCE_AUDIT_FILE = "source_audit.json"
XRAY_TASKS = ("covid", "mortality")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class XrayOptions:
    """The X-ray runner's settings beyond the engine recipe (the ``xray:`` mapping).

    ``run_folds``: how many of the ``split.cv_folds`` folds to train (0 = all); fold 1 is
    the held-out split, so ``run_folds: 1`` is a plain patient-grouped held-out run.
    ``ship``: ``fold1`` ships the fold-1 model (its test part is a true held-out set);
    ``all_data`` refits on every labelled image after the CV (metrics.json's ``test`` then
    holds the pooled out-of-fold predictions of the CV models). ``teacher_logits``:
    ``cached`` (computed once on un-augmented images) or ``online`` (see ``distill``).
    """

    run_folds: int = 0
    ship: Literal["fold1", "all_data"] = "fold1"
    teacher_logits: Literal["cached", "online"] = "cached"
    audit: bool = True


def _options(data: dict[str, Any] | None) -> XrayOptions:
    data = data or {}
    fields = {f.name for f in dataclasses.fields(XrayOptions)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise RecipeError(f"Unknown xray setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}.")
    opts = XrayOptions(**data)
    if opts.ship not in ("fold1", "all_data") or opts.teacher_logits not in ("cached", "online"):
        raise RecipeError("xray.ship must be fold1 or all_data; xray.teacher_logits cached or online.")
    return opts


def load_xray_recipe(path: str | Path) -> tuple[Recipe, XrayOptions]:
    """An engine recipe plus the optional ``xray:`` mapping."""
    path = Path(path)
    data = read_recipe_mapping(path)
    opts = _options(data.pop("xray", None))
    try:
        recipe = recipe_from_dict(data)
    except RecipeError as err:
        raise RecipeError(f"{path.name}: {err}") from None
    if recipe.task not in XRAY_TASKS:
        raise RecipeError(f"{path.name}: the X-ray runner trains covid or mortality recipes, not {recipe.task!r}.")
    if recipe.split.cv_folds < 2:
        raise RecipeError(f"{path.name}: X-ray recipes define their split as grouped folds; set split.cv_folds >= 2.")
    return recipe, opts


def is_xray_recipe(path: str | Path) -> bool:
    """True for recipes this module must run (task covid or mortality): the CLI dispatch test."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("task") in XRAY_TASKS


# --------------------------------------------------------------------------- data


def synthetic_xray_pool(task: str, n: int, seed: int, size: int = 40) -> LabelledSet:
    """Generated X-ray-like images with metadata, for CI: a disc whose brightness is the class.

    Mortality pools get a quarter unlabelled rows and metadata (ICU, O2, intubation, age)
    tied to the label, so that imputation and CV run end to end without data files.
    """
    import io

    from PIL import Image

    from medmodels.zoo.registry import get_task

    classes = get_task(task).classes
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = (i // 2) % 2
        img = rng.integers(0, 60, size=(size, size), dtype=np.uint8)
        yy, xx = np.ogrid[:size, :size]
        img[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < (size // 4) ** 2] = 90 + 150 * label
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        yn = "Y" if label else "N"
        meta = {"went_icu": yn, "needed_supplemental_O2": yn, "intubation_present": yn, "extubated": "N",
                "age": str(40 + 30 * label + int(rng.integers(0, 10))), "dataset": "synthetic",
                "survival": ("N" if label else "Y")}
        unlabelled = task == "mortality" and i % 4 == 3
        if unlabelled:
            meta["survival"] = ""
        samples.append(Sample(name=f"synthetic_{i:04d}.png", source=buf.getvalue(),
                              label=None if unlabelled else label, group=f"p{i // 2}",
                              meta=MappingProxyType(meta)))
    return LabelledSet(samples, classes)


def xray_pool(recipe: Recipe) -> LabelledSet:
    """Every sample the recipe may use; mortality keeps unlabelled rows (label None)."""
    if recipe.data == "synthetic":
        return synthetic_xray_pool(recipe.task, recipe.max_images or 48, recipe.seed)
    from medmodels.data.shared import covid_samples, mortality_samples

    pool = covid_samples(external=False) if recipe.task == "covid" else mortality_samples()
    if recipe.max_images:
        labelled = [i for i, s in enumerate(pool.samples) if s.label is not None]
        rng = np.random.default_rng(recipe.seed)
        keep = set(rng.choice(labelled, size=min(recipe.max_images, len(labelled)), replace=False).tolist())
        pool = LabelledSet([s for i, s in enumerate(pool.samples) if s.label is None or i in keep], pool.classes)
    return pool


def decode_pool(pool: LabelledSet, pre: Any, tag: str) -> torch.Tensor:
    """uint8 model views of the whole pool, cached on disk for real data."""
    if tag == "synthetic":
        return decode_all(pool, pre)
    h = hashlib.sha256(repr((tag, pre.input_size, pre.resize, pre.grayscale)).encode())
    for s in pool.samples:
        h.update(s.name.encode())
    return decode_all(pool, pre, f"xray_{h.hexdigest()[:16]}")


def xray_folds(recipe: Recipe, pool: LabelledSet) -> list[dict[str, np.ndarray]]:
    """Per fold: train / val / test indices into ``pool``, over its labelled samples only.

    The engine's ``fold_splits`` (stratified grouped k-fold, validation carved off the
    training groups) on the labelled samples; fold 1 is the held-out split.
    """
    from medmodels.train.cv import fold_splits

    labelled = np.asarray([i for i, s in enumerate(pool.samples) if s.label is not None], dtype=int)
    labels = np.asarray([pool.samples[i].label for i in labelled], dtype=int)
    groups = [pool.samples[i].group for i in labelled]
    return [{k: labelled[v] for k, v in part.items()} for part in fold_splits(recipe, labels, groups)]


def _metadata_frame(pool: LabelledSet) -> Any:
    import pandas as pd

    return pd.DataFrame([dict(s.meta) for s in pool.samples])


def imputed_training_labels(
    pool: LabelledSet, split: dict[str, np.ndarray], seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(train indices, their labels, imputation report) for the ``labels: imputed`` variant.

    The training part gains the unlabelled images of patients that are in neither this
    fold's test nor its validation part; their labels come from a random forest fitted on
    the training rows alone (real labels of the training part + metadata). Test and
    validation parts keep real labels only.
    """
    from medmodels.train.imputation import impute_training_fold

    held = {pool.samples[i].group for part in ("val", "test") for i in split[part]}
    extra = [i for i, s in enumerate(pool.samples) if s.label is None and s.group not in held]
    train = np.concatenate([split["train"], np.asarray(extra, dtype=int)])
    df = _metadata_frame(pool)
    groups = np.asarray([str(s.group) for s in pool.samples])
    result = impute_training_fold(df, train, groups=groups, seed=seed)
    real = np.asarray([pool.samples[i].label for i in split["train"]], dtype=int)
    labels = result.labels.astype(int)
    if not np.array_equal(labels[: len(real)], real):
        raise AssertionError("imputation changed a real label")
    report = {"n_real": int(len(real)), "n_imputed": int(result.n_imputed),
              "imputed_died": int((labels[len(real):] == 1).sum()),
              "forest_cv_accuracy_mean": result.cv_accuracy_mean,
              "forest_cv_accuracy_std": result.cv_accuracy_std}
    return train, labels, report


def imputation_overview(pool: LabelledSet, seed: int) -> dict[str, Any]:
    """The forest's own grouped 5-fold accuracy on every labelled row (the paper's ~92.5%)."""
    from medmodels.train.imputation import impute_survival

    groups = [str(s.group) for s in pool.samples]
    result = impute_survival(_metadata_frame(pool), groups=groups, seed=seed)
    return {"cv_accuracy_mean": result.cv_accuracy_mean, "cv_accuracy_std": result.cv_accuracy_std,
            "n_labelled": result.n_labelled, "n_unlabelled": result.n_imputed,
            "features": ["went_icu", "needed_supplemental_O2", "intubation_present", "extubated",
                         "age binned 0-30/31-40/41-50/51-60/61-70/71-80/81-100"],
            "cv": "StratifiedGroupKFold(5) by patient group over the labelled rows"}


# --------------------------------------------------------------------------- one fit


@dataclass
class FoldData:
    """One fold's tensors and the indices (into the pool) they came from."""

    index: dict[str, np.ndarray]
    data: dict[str, TensorData]
    imputation: dict[str, Any] | None = None


def fold_data(recipe: Recipe, pool: LabelledSet, images: torch.Tensor,
              split: dict[str, np.ndarray]) -> FoldData:
    labels = torch.as_tensor([-1 if s.label is None else s.label for s in pool.samples], dtype=torch.long)
    index = dict(split)
    train_labels = labels[torch.as_tensor(split["train"], dtype=torch.long)]
    report = None
    if recipe.labels == "imputed":
        index["train"], imputed, report = imputed_training_labels(pool, split, recipe.seed)
        train_labels = torch.as_tensor(imputed, dtype=torch.long)
    data = {"train": TensorData(images[torch.as_tensor(index["train"], dtype=torch.long)], train_labels)}
    for part in ("val", "test"):
        ix = torch.as_tensor(index[part], dtype=torch.long)
        data[part] = TensorData(images[ix], labels[ix])
    return FoldData(index, data, report)


class TeacherSource:
    """The distillation teacher: the trained model, and its logits on every pool image (cached)."""

    def __init__(self, recipe: Recipe, pool: LabelledSet, images: torch.Tensor, pre: Any,
                 teacher: nn.Module | None = None, progress: IO[str] | None = None) -> None:
        from medmodels.train.distill import freeze, teacher_logits

        assert recipe.distill is not None
        if teacher is None:
            if recipe.data == "synthetic":
                # CI recipes: an untrained teacher of the named architecture (engine check only).
                from medmodels.zoo.registry import get_entry

                entry = dataclasses.replace(get_entry(recipe.task, recipe.distill.teacher),
                                            preprocess=pre)
                torch.manual_seed(recipe.seed)
                teacher = build_arch(entry)
                self.folder = None
            else:
                from medmodels.hub import load_trained

                teacher, card = load_trained(recipe.task, recipe.distill.teacher)
                self.folder = card.folder
        else:
            self.folder = None
        self.model = freeze(teacher)
        self.metrics = self._teacher_metrics()
        self._logits: torch.Tensor | None = None
        self._images, self._pre, self._progress = images, pre, progress
        self._key = hashlib.sha256(
            (str(self.metrics.get("created")) + "".join(s.name for s in pool.samples)).encode()
        ).hexdigest()[:16]

    def _teacher_metrics(self) -> dict[str, Any]:
        if self.folder is None:
            return {}
        path = Path(self.folder) / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def test_groups(self) -> set[str]:
        """The groups the teacher was *not* trained on (its test part)."""
        return set(self.metrics.get("split", {}).get("test", {}).get("groups") or [])

    def logits(self) -> torch.Tensor:
        from medmodels.train.distill import teacher_logits

        if self._logits is None:
            path = CACHE_DIR / f"teacher_logits_{self._key}.pt"
            if self.folder is not None and path.is_file():
                self._logits = torch.load(path, weights_only=True)
            else:
                t0 = time.perf_counter()
                self._logits = teacher_logits(self.model, self._images, self._pre, progress=self._progress)
                log.info("teacher logits for %d images in %.0fs", len(self._images), time.perf_counter() - t0)
                if self.folder is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(self._logits, path)
        return self._logits


def train_one(recipe: Recipe, opts: XrayOptions, entry: ModelEntry, fd: FoldData,
              teacher: TeacherSource | None, progress: IO[str] | None) -> tuple[nn.Module, FitResult]:
    """Build and fit the recipe's model on one fold; distillation or plain (engine ``fit``)."""
    pre = entry.preprocess
    torch.manual_seed(recipe.seed)
    model = build_arch(entry)
    plain = dataclasses.replace(recipe, distill=None)
    train_fn, val_fn = build_loss(plain, fd.data["train"].labels.numpy(), len(entry.classes))
    cfg = fit_config(recipe, entry)
    if recipe.distill is None:
        return model, fit(model, fd.data["train"], fd.data["val"], pre, cfg, train_fn, val_fn, progress)
    from medmodels.train.distill import distill_fit
    from medmodels.train.losses import class_weights_reciprocal

    assert teacher is not None
    weights = (class_weights_reciprocal(np.bincount(fd.data["train"].labels.numpy(),
                                                    minlength=len(entry.classes)))
               if recipe.balance == "class_weight" else None)
    kd = recipe.distill
    if opts.teacher_logits == "cached":
        cached = teacher.logits()[torch.as_tensor(fd.index["train"], dtype=torch.long)]
        result = distill_fit(model, fd.data["train"], fd.data["val"], pre, cfg, temperature=kd.temperature,
                             alpha=kd.alpha, cached_logits=cached, class_weights=weights,
                             val_loss_fn=val_fn, progress=progress)
    else:
        result = distill_fit(model, fd.data["train"], fd.data["val"], pre, cfg, temperature=kd.temperature,
                             alpha=kd.alpha, teacher=teacher.model, class_weights=weights,
                             val_loss_fn=val_fn, progress=progress)
    return model, result


# --------------------------------------------------------------------------- folds


def fold_cache_dir(recipe: Recipe, opts: XrayOptions, teacher: TeacherSource | None) -> Path | None:
    """Where trained folds of this exact recipe (notes aside) are kept between runs (None: CI data)."""
    if recipe.data == "synthetic":
        return None
    # Settings left at their default are not part of the key, so that a new engine setting
    # (added with a default that keeps the old behaviour) does not orphan trained folds.
    defaults = {}
    for f in dataclasses.fields(Recipe):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            defaults[f.name] = f.default_factory()  # type: ignore[misc]
    defaults = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in defaults.items()}
    key = {k: v for k, v in recipe.to_dict().items()
           if k != "notes" and (k not in defaults or json.dumps(v, default=str) != json.dumps(defaults[k], default=str))}
    key["teacher_logits"] = opts.teacher_logits
    key["teacher_created"] = None if teacher is None else teacher.metrics.get("created")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return CACHE_DIR.parent / "xray_folds" / f"{recipe.task}_{recipe.name}_{digest}"


def train_fold(recipe: Recipe, opts: XrayOptions, entry: ModelEntry, pool: LabelledSet, images: torch.Tensor,
               split: dict[str, np.ndarray], k: int, teacher: TeacherSource | None,
               progress: IO[str] | None) -> dict[str, Any]:
    """Train fold ``k`` and collect what the CV summary needs from it."""
    pre = entry.preprocess
    fd = fold_data(recipe, pool, images, split)
    fold_recipe = dataclasses.replace(recipe, seed=recipe.seed + k - 1)
    model, result = train_one(fold_recipe, opts, entry, fd, teacher, progress)
    m = base_metrics(recipe, opts, entry, pool, fd, model, result)
    probs = probabilities(model, fd.data["test"].images, pre)
    labels = fd.data["test"].labels.numpy()
    pos = entry.task_spec.positive_index
    entry_fold: dict[str, Any] = {
        "fold": k, "test": m["test"],
        "split": {p: dict(m["split"][p]) for p in ("train", "val", "test")},
        "training": {kk: vv for kk, vv in m["training"].items() if kk != "history"}}
    if teacher is not None and teacher.test_groups:
        seen = {str(pool.samples[i].group) for i in fd.index["test"]} - teacher.test_groups
        entry_fold["teacher_saw_test_groups"] = len(seen)
    if fd.imputation is not None:
        entry_fold["imputation"] = fd.imputation
    return {"entry_fold": entry_fold, "rows": prediction_rows(pool, fd.index["test"], probs, k),
            "labels": (labels == pos).astype(int).tolist(), "scores": probs[:, pos].tolist(),
            "metrics": m if k == 1 else None, "model": model if k == 1 else None}


def save_fold(cache: Path | None, k: int, outcome: dict[str, Any]) -> None:
    if cache is None:
        return
    cache.mkdir(parents=True, exist_ok=True)
    data = {key: v for key, v in outcome.items() if key != "model"}
    (cache / f"fold_{k}.json").write_text(json.dumps(data, default=_json))
    if outcome.get("model") is not None:
        torch.save(outcome["model"].state_dict(), cache / f"fold_{k}.pt")


def load_fold(cache: Path | None, k: int, entry: ModelEntry) -> dict[str, Any] | None:
    if cache is None:
        return None
    path = cache / f"fold_{k}.json"
    if not path.is_file():
        return None
    outcome = json.loads(path.read_text())
    outcome["model"] = None
    if k == 1:
        weights = cache / "fold_1.pt"
        if not weights.is_file():
            return None
        model = build_arch(entry)
        model.load_state_dict(torch.load(weights, weights_only=True))
        outcome["model"] = model.eval()
    return outcome


# --------------------------------------------------------------------------- metrics


def _report(labels: np.ndarray, probs: np.ndarray, entry: ModelEntry) -> dict[str, Any] | None:
    from medmodels.metrics import compute_metrics

    if len(labels) == 0:
        return None
    rep = compute_metrics(labels, probs, entry.classes, entry.task_spec.positive_index)
    out = rep.to_dict()
    out["notes"] = list(rep.notes)
    return out


def prediction_rows(pool: LabelledSet, index: np.ndarray, probs: np.ndarray, fold: int | str) -> list[dict[str, Any]]:
    """predictions.csv rows: file, patient, label, score_<class>..., fold."""
    rows = []
    for i, p in zip(index, probs):
        s = pool.samples[int(i)]
        row: dict[str, Any] = {"file": s.name, "patient": s.group, "label": pool.classes[s.label]}
        row.update({f"score_{c}": float(v) for c, v in zip(pool.classes, p)})
        row["fold"] = fold
        rows.append(row)
    return rows


def write_predictions(path: Path, rows: list[dict[str, Any]], classes: Sequence[str]) -> None:
    columns = ["file", "patient", "label", *[f"score_{c}" for c in classes], "fold"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        formatted = [{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
        write_rows(fh, formatted, columns)


def cv_summary(fold_reports: list[dict[str, Any]], fold_scores: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Mean/std over folds, cumulative confusion matrix with its rates, fold-averaged curves."""
    from medmodels.metrics import mean_curve, pr_curve_data, roc_curve_data
    from medmodels.train.cv import summarize_folds

    summary = summarize_folds(fold_reports)
    cm = np.asarray(summary["confusion_matrix_sum"])
    out: dict[str, Any] = {"mean": summary["mean"], "std": summary["std"], "n_folds": summary["n_folds"],
                           "cumulative_confusion_matrix": cm.tolist()}
    rocs = [roc_curve_data(y, s) for y, s in fold_scores]
    prs = [pr_curve_data(y, s) for y, s in fold_scores]
    roc, pr = mean_curve(rocs), mean_curve(prs)
    out["roc_mean"] = {"x": roc.x, "y": roc.y, "y_std": roc.y_std, "auc": roc.auc, "auc_std": roc.auc_std,
                       "notes": list(roc.notes)}
    out["pr_mean"] = {"x": pr.x, "y": pr.y, "y_std": pr.y_std, "auc": pr.auc, "auc_std": pr.auc_std,
                      "notes": list(pr.notes)}
    return out


def cumulative_rates(cm: list[list[int]], positive_index: int) -> dict[str, float | None]:
    """TPR/TNR/FPR/FNR from the confusion matrix summed over folds (rows = truth)."""
    n = 1 - positive_index
    tp, fn = cm[positive_index][positive_index], cm[positive_index][n]
    fp, tn = cm[n][positive_index], cm[n][n]

    def ratio(a: int, b: int) -> float | None:
        return None if b == 0 else a / b

    return {"tp": tp, "tn": tn, "fp": fp, "fn": fn, "tpr": ratio(tp, tp + fn), "tnr": ratio(tn, tn + fp),
            "fpr": ratio(fp, fp + tn), "fnr": ratio(fn, fn + tp)}


def base_metrics(recipe: Recipe, opts: XrayOptions, entry: ModelEntry, pool: LabelledSet, fd: FoldData,
                 model: nn.Module, result: FitResult) -> dict[str, Any]:
    """metrics.json of one fit, in the engine's layout (recipe, data, split, training, val, test)."""
    pre = entry.preprocess
    labelled = [s for s in pool.samples if s.label is not None]
    metrics: dict[str, Any] = {
        "task": recipe.task, "name": recipe.name, "model": entry.name, "arch": entry.arch,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe.to_dict(), "xray": dataclasses.asdict(opts),
        "preprocess": dataclasses.asdict(pre), "parameters": count_parameters(model),
        "data": {"source": recipe.data, "n_images": len(labelled),
                 "n_unlabelled": len(pool) - len(labelled),
                 "n_groups": len({s.group for s in labelled}) or None,
                 "class_counts": {c: sum(1 for s in labelled if s.label == k) for k, c in enumerate(pool.classes)},
                 "datasets": dict(Counter(s.meta.get("dataset", "?") for s in labelled))},
        "training": {"seconds": round(result.seconds, 2), "best_epoch": result.best_epoch,
                     "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
                     "stop_reason": result.stop_reason, "history": result.history},
        "machine": machine_info(),
    }
    split: dict[str, Any] = {"mode": "grouped", "by": "patient (split_group)",
                             "fractions": list(recipe.split.fractions), "seed": recipe.split.seed,
                             "cv_folds": recipe.split.cv_folds}
    for part in ("train", "val", "test"):
        idx = fd.index[part]
        if part == "train" and fd.imputation is not None:
            idx = fd.index["train"][: fd.imputation["n_real"]]
        summary = split_summary(pool, idx, True)
        if part == "train" and fd.imputation is not None:
            summary["n_imputed_images"] = fd.imputation["n_imputed"]
        split[part] = summary
        split[f"{part}_groups"] = summary["groups"]
    metrics["split"] = split
    for part in ("val", "test"):
        d = fd.data[part]
        metrics[part] = _report(d.labels.numpy(), probabilities(model, d.images, pre), entry) if len(d) else None
    if fd.imputation is not None:
        metrics["imputation_fold"] = fd.imputation
    return metrics


# --------------------------------------------------------------------------- audit


def actualmed_audit(model: nn.Module, entry: ModelEntry) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Metrics and predictions on the Actualmed subset (26 COVID-19 vs 18 normal, one source)."""
    from medmodels.data.shared import covid_samples

    ext = covid_samples(external=True)
    images = decode_pool(ext, entry.preprocess, "actualmed")
    probs = probabilities(model, images, entry.preprocess)
    labels = np.asarray(ext.labels, dtype=int)
    return _report(labels, probs, entry), prediction_rows(ext, np.arange(len(ext)), probs, "actualmed")


def source_audit(size: int = 32, seed: int = 42, folds: int = 5) -> dict[str, Any]:
    """How well the image *source* (NIH vs ieee8023) can be predicted from the model view.

    Logistic regression on the ``covid`` preprocessing (pad to square, grayscale,
    per-image 1st-99th percentile stretch) downsampled to ``size`` px, scored by
    patient-grouped stratified k-fold. Also: the accuracy of the rule "NIH -> normal,
    otherwise COVID-19", which says how much of the label the source alone gives away.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medmodels.data.shared import covid_samples
    from medmodels.data.transforms import normalize
    from medmodels.zoo.registry import get_entry

    pre = dataclasses.replace(get_entry("covid", "mobilenet_v2").preprocess, input_size=size)
    pool = covid_samples(external=False)
    images = decode_pool(pool, pre, f"source_audit_{size}")
    x = normalize(images, pre)[:, 0].flatten(1).numpy()
    source = np.asarray([s.meta.get("dataset") == "nih_cxr14" for s in pool.samples], dtype=int)
    groups = np.asarray([str(s.group) for s in pool.samples])
    labels = np.asarray(pool.labels, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    pred = cross_val_predict(clf, x, source, cv=splitter, groups=groups, method="predict_proba")[:, 1]
    fold_acc = []
    for _, te in splitter.split(x, source, groups):
        fold_acc.append(float(((pred[te] >= 0.5).astype(int) == source[te]).mean()))
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    normal = pool.classes.index("Normal")
    rule = np.where(source == 1, normal, 1 - normal)
    return {
        "what": f"logistic regression (standardised pixels, C=0.01) on {size}x{size} model views "
                "(pad to square, grayscale, per-image percentile stretch), predicting NIH vs ieee8023",
        "n_images": int(len(pool)), "n_nih": int(source.sum()), "n_ieee8023": int((1 - source).sum()),
        "cv": f"StratifiedGroupKFold({folds}) by patient, seed {seed}",
        "accuracy_mean": float(np.mean(fold_acc)), "accuracy_std": float(np.std(fold_acc)),
        "fold_accuracy": fold_acc,
        "balanced_accuracy": float(balanced_accuracy_score(source, (pred >= 0.5).astype(int))),
        "roc_auc": float(roc_auc_score(source, pred)),
        "label_from_source_rule_accuracy": float((rule == labels).mean()),
    }


def view_shortcut(pool: LabelledSet) -> dict[str, Any]:
    """How much the X-ray *view* alone says about death (a confounder: supine AP films are taken of
    patients too sick to stand). ROC AUC of the score PA=0 < AP=1 < AP Supine=2 over labelled images."""
    from sklearn.metrics import roc_auc_score

    order = {"PA": 0, "AP": 1, "AP semi erect": 1, "AP Supine": 2}
    died = pool.classes.index("died")
    rows = [(order.get(s.meta.get("view", ""), 1), int(s.label == died), s.meta.get("view", "?"))
            for s in pool.samples if s.label is not None]
    y = np.asarray([r[1] for r in rows])
    x = np.asarray([r[0] for r in rows])
    per_view: dict[str, dict[str, int]] = {}
    for _, lab, view in rows:
        per_view.setdefault(view, {"images": 0, "died": 0})
        per_view[view]["images"] += 1
        per_view[view]["died"] += lab
    return {"what": "view as the only predictor of death (PA < AP < AP Supine), all labelled images",
            "roc_auc": float(roc_auc_score(y, x)) if 0 < y.sum() < len(y) else None, "per_view": per_view}


def write_source_audit(out: Path | None = None) -> Path:
    path = out or WEIGHTS_DIR / "covid" / SOURCE_AUDIT_FILE
    result = source_audit()
    result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    log.info("source audit: accuracy %.3f +/- %.3f -> %s", result["accuracy_mean"], result["accuracy_std"], path)
    return path


def latency_comparison(weights_dir: Path | None = None, names: Sequence[str] = ("kd_teacher", "mobilenet_v2",
                                                                                 "mobilenet_v2_kd")) -> dict[str, Any]:
    """CPU ms per image of teacher and students measured in one process, written into metrics.json."""
    from medmodels.hub import HubSettings, load_trained
    from medmodels.inference import time_inference

    settings = HubSettings(weights_dir=weights_dir or WEIGHTS_DIR)
    torch.set_num_threads(1)
    rows: dict[str, Any] = {}
    for name in names:
        try:
            model, card = load_trained("covid", name, settings)
        except Exception as err:  # noqa: BLE001 - a missing model is reported, not fatal
            rows[name] = {"error": str(err)}
            continue
        rows[name] = {"parameters": count_parameters(model),
                      **time_inference(model, card.entry.preprocess, batch_sizes=(1, 32), repeats=5)}
    result = {"threads": 1, "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "models": rows}
    t = rows.get("kd_teacher", {})
    for name in names[1:]:
        s = rows.get(name, {})
        if "ms_per_image_batch1" in t and "ms_per_image_batch1" in s:
            result[f"{name}_over_teacher_batch1"] = s["ms_per_image_batch1"] / t["ms_per_image_batch1"]
            result[f"{name}_over_teacher_batch32"] = s["ms_per_image_batch32"] / t["ms_per_image_batch32"]
            result[f"{name}_parameter_reduction"] = 1.0 - s["parameters"] / t["parameters"]
    for name in names:
        path = settings.weights_dir / "covid" / name / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            m["latency_same_run"] = result
            path.write_text(json.dumps(m, indent=2) + "\n")
    return result


# --------------------------------------------------------------------------- the run


def run_xray(recipe: Recipe, opts: XrayOptions, out_dir: Path | str | None = None,
             teacher_model: nn.Module | None = None, only_folds: Sequence[int] = (),
             cached_only: bool = False) -> Path:
    """Train the recipe's folds, ship one model, write weights, metrics.json, predictions.csv, card.

    Every trained fold is cached under ``.cache/xray_folds`` (keyed by the recipe), so a run
    that stopped, or folds trained in parallel processes with ``only_folds`` (which returns
    the cache folder and writes no weights), are picked up instead of trained again.
    ``cached_only`` trains nothing but fold 1 (if missing) and summarises the folds found in
    the cache (for a CV cut short by its time budget; the summary names the folds used).
    """
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR / recipe.task / recipe.name
    torch.set_num_threads(max(1, recipe.threads))
    with run_log(LOG_DIR / recipe.task / f"{recipe.name}.log") as progress:
        log.info("xray recipe %s: %s %s", recipe.name, json.dumps(recipe.to_dict()), dataclasses.asdict(opts))
        entry = model_entry(recipe)
        pre = entry.preprocess
        pool = xray_pool(recipe)
        images = decode_pool(pool, pre, recipe.data)
        folds = xray_folds(recipe, pool)
        n_run = opts.run_folds or len(folds)
        teacher = (TeacherSource(recipe, pool, images, pre, teacher_model, progress)
                   if recipe.distill is not None else None)
        fold_metrics, fold_scores, rows = [], [], []
        shipped: nn.Module | None = None
        first: dict[str, Any] | None = None
        cache = fold_cache_dir(recipe, opts, teacher)
        wanted = list(only_folds) if only_folds else list(range(1, n_run + 1))
        for k in wanted:
            split = folds[k - 1]
            outcome = load_fold(cache, k, entry)
            if outcome is None and cached_only and k != 1:
                log.warning("fold %d/%d is not in %s: left out of the CV summary", k, len(folds), cache)
                continue
            if outcome is None:
                log.info("fold %d/%d: %d train, %d val, %d test", k, len(folds), len(split["train"]),
                         len(split["val"]), len(split["test"]))
                outcome = train_fold(recipe, opts, entry, pool, images, split, k, teacher, progress)
                save_fold(cache, k, outcome)
            else:
                log.info("fold %d/%d: loaded from %s", k, len(folds), cache)
            rows += outcome["rows"]
            fold_scores.append((np.asarray(outcome["labels"]), np.asarray(outcome["scores"])))
            fold_metrics.append(outcome["entry_fold"])
            if k == 1:
                shipped, first = outcome["model"], outcome["metrics"]
        if only_folds:
            return cache or out
        assert shipped is not None and first is not None
        metrics = first
        metrics["test_is"] = "fold 1 of the grouped CV (patient-grouped held-out split)"
        if len(fold_metrics) > 1:
            metrics["cv"] = {"folds": fold_metrics, **cv_summary([f["test"] for f in fold_metrics], fold_scores)}
            pos = entry.task_spec.positive_index
            if pos is not None:
                metrics["cv"]["cumulative_rates"] = cumulative_rates(metrics["cv"]["cumulative_confusion_matrix"], pos)
            if len(fold_metrics) < len(folds):
                used = [f["fold"] for f in fold_metrics]
                metrics["cv"]["note"] = (f"only folds {', '.join(map(str, used))} of {len(folds)} were trained "
                                         "(CPU budget); mean and sd are over those folds")
        else:
            metrics["cv"] = {"folds": fold_metrics, "n_folds": 1,
                             "note": f"only fold 1 of {len(folds)} was trained (CPU budget)"}
        if recipe.labels == "imputed" and recipe.data != "synthetic":
            metrics["imputation"] = imputation_overview(pool, recipe.seed)
        if opts.ship == "all_data":
            shipped, metrics = _fit_all_data(recipe, opts, entry, pool, images, teacher, progress, metrics, rows)
        if teacher is not None:
            metrics["distillation"] = {"teacher": recipe.distill.teacher if recipe.distill else None,
                                       "teacher_logits": opts.teacher_logits,
                                       "teacher_test_groups_equal_fold1_test": (
                                           set(metrics["split"]["test"]["groups"] or []) == teacher.test_groups)}
        metrics["inference_ms"] = inference_times(shipped, pre)
        audit_rows: list[dict[str, Any]] = []
        if recipe.task == "covid" and opts.audit and recipe.data != "synthetic":
            try:
                actualmed, audit_rows = actualmed_audit(shipped, entry)
            except Exception as err:  # noqa: BLE001 - the audit must not cost the trained weights
                log.exception("actualmed audit failed")
                actualmed = {"error": str(err)}
            metrics["audit"] = {"actualmed": actualmed}
            src = WEIGHTS_DIR / "covid" / SOURCE_AUDIT_FILE
            if src.is_file():
                metrics["audit"]["source_classifier"] = json.loads(src.read_text())
        if recipe.task == "mortality" and recipe.data != "synthetic":
            metrics["audit"] = {"view_only": view_shortcut(pool)}
        _save(recipe, entry, out, shipped, metrics, rows, audit_rows)
    return out


def _fit_all_data(recipe: Recipe, opts: XrayOptions, entry: ModelEntry, pool: LabelledSet, images: torch.Tensor,
                  teacher: TeacherSource | None, progress: IO[str] | None, cv_metrics: dict[str, Any],
                  rows: list[dict[str, Any]]) -> tuple[nn.Module, dict[str, Any]]:
    """Refit on every labelled image (no test part); ``test`` becomes the pooled out-of-fold report."""
    labelled = np.asarray([i for i, s in enumerate(pool.samples) if s.label is not None], dtype=int)
    split = {"train": labelled, "val": labelled[:0], "test": labelled[:0]}
    fd = fold_data(recipe, pool, images, split)
    model, result = train_one(recipe, opts, entry, fd, teacher, progress)
    metrics = base_metrics(recipe, opts, entry, pool, fd, model, result)
    classes = list(pool.classes)
    y = np.asarray([classes.index(r["label"]) for r in rows], dtype=int)
    probs = np.asarray([[r[f"score_{c}"] for c in classes] for r in rows])
    metrics["test"] = _report(y, probs, entry)
    metrics["test_is"] = ("pooled out-of-fold predictions of the CV models (the shipped model was refitted "
                          "on all labelled images and has no held-out test part of its own)")
    for key in ("cv", "imputation"):
        if key in cv_metrics:
            metrics[key] = cv_metrics[key]
    return model, metrics


def _save(recipe: Recipe, entry: ModelEntry, out: Path, model: nn.Module, metrics: dict[str, Any],
          rows: list[dict[str, Any]], audit_rows: list[dict[str, Any]]) -> None:
    from medmodels.hub import save_model_folder
    from medmodels.report_xray import xray_card

    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out / PREDICTIONS_FILE, rows, entry.classes)
    if audit_rows:
        write_predictions(out / AUDIT_PREDICTIONS_FILE, audit_rows, entry.classes)
    try:
        card = xray_card(recipe, entry, metrics)
    except Exception:  # noqa: BLE001 - never lose trained weights to a card bug; refresh later
        log.exception("model card failed; writing a stub (re-run with --refresh-cards)")
        card = f"# {entry.title} ({entry.key})\n\nCard pending: run python -m medmodels.train.xray --refresh-cards.\n"
    if recipe.save_weights:
        save_model_folder(model, entry, out, metrics=metrics, card=card, half=recipe.half)
    else:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json) + "\n")
        (out / "README.md").write_text(card)
    test = (metrics.get("test") or {}).get("metrics", {})
    log.info("wrote %s (test accuracy %s, balanced %s)", out, test.get("accuracy"), test.get("balanced_accuracy"))


def _json(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def refresh_cards(weights_dir: Path | None = None) -> list[Path]:
    """Re-write the README.md of every X-ray weights folder from its metrics.json (after audits)."""
    from medmodels.report_xray import xray_card
    from medmodels.train.card import with_weights_status
    from medmodels.train.recipe import recipe_from_dict
    from medmodels.zoo.registry import get_entry

    done = []
    for task in XRAY_TASKS:
        for path in sorted((weights_dir or WEIGHTS_DIR).glob(f"{task}/*/metrics.json")):
            m = json.loads(path.read_text())
            src = (weights_dir or WEIGHTS_DIR) / "covid" / SOURCE_AUDIT_FILE
            if task == "covid" and src.is_file():
                m.setdefault("audit", {})["source_classifier"] = json.loads(src.read_text())
                path.write_text(json.dumps(m, indent=2) + "\n")
            if task == "mortality" and m.get("data", {}).get("source") == "shared" and "audit" not in m:
                from medmodels.data.shared import mortality_samples

                m["audit"] = {"view_only": view_shortcut(mortality_samples())}
                path.write_text(json.dumps(m, indent=2) + "\n")
            recipe = recipe_from_dict(m["recipe"])
            entry = model_entry(recipe) if recipe.data != "synthetic" else get_entry(task, m["model"])
            card = with_weights_status(xray_card(recipe, entry, m), path.parent, recipe)
            (path.parent / "README.md").write_text(card)
            done.append(path.parent)
    return done


def train_from_args(args: argparse.Namespace) -> Path:
    """The ``python -m medmodels train`` hook: run an X-ray recipe with the CLI's overrides.

    Wire it in ``medmodels.train.cli.run``: ``if is_xray_recipe(args.recipe): out =
    train_from_args(args)``. Honours ``--out``, ``--epochs``, ``--max-minutes``, ``--threads``.
    """
    recipe, opts = load_xray_recipe(args.recipe)
    changes = {k: v for k, v in (("epochs", getattr(args, "epochs", None)),
                                 ("max_minutes", getattr(args, "max_minutes", None)),
                                 ("threads", getattr(args, "threads", None))) if v is not None}
    if changes:
        recipe = dataclasses.replace(recipe, **changes)
    return run_xray(recipe, opts, getattr(args, "out", None))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medmodels.train.xray",
                                     description="Train the chest X-ray models and run their audits.")
    parser.add_argument("--recipe", type=Path, help="recipes/covid_*.yaml or recipes/mortality_*.yaml")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=None, help="override xray.run_folds")
    parser.add_argument("--only-folds", type=str, default="",
                        help="comma-separated folds to train and cache, writing no weights (parallel runs)")
    parser.add_argument("--source-audit", action="store_true", help="fit the image-source classifier")
    parser.add_argument("--assemble", action="store_true",
                        help="summarise the cached folds only (train nothing but a missing fold 1)")
    parser.add_argument("--latency", action="store_true", help="time teacher and students in one process")
    parser.add_argument("--refresh-cards", action="store_true", help="re-write the X-ray model cards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.source_audit:
        print(write_source_audit())
    if args.recipe:
        recipe, opts = load_xray_recipe(args.recipe)
        if args.folds is not None:
            opts = dataclasses.replace(opts, run_folds=args.folds)
        only = [int(v) for v in args.only_folds.split(",") if v.strip()]
        print(run_xray(recipe, opts, args.out, only_folds=only, cached_only=args.assemble))
    if args.latency:
        print(json.dumps(latency_comparison(), indent=2))
    if args.refresh_cards:
        for p in refresh_cards():
            print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
