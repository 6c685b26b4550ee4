"""The one training engine: ``run(recipe)`` for every task, fixed split or folds.

recipe -> pool (``train.pool``) -> fixed by-group split, or ``split.cv_folds`` grouped
folds -> per part: labels (imputed inside the training part only, ``labels: imputed``) ->
fit (plain, or distilled from a teacher whose logits are ``cached`` or ``online``) ->
:class:`~medmodels.record.RunRecord` -> the shipped model (the fixed split's, fold 1's,
the last fold's, or one refitted on all data: ``split.ship``) -> the task's registered
audit (``train.audit``) -> ``weights/<task>/<name>/`` (model.safetensors, config.json,
metrics.json, README.md, and predictions.csv for folds). A metrics-only recipe
(``save_weights: false``) writes ``weights/<task>/<model>/<name>/`` without weights.

Trained folds of real data are kept in ``.cache/folds`` (keyed by the recipe), so a run
that stopped resumes, and folds trained by parallel processes (``only_folds``) are
assembled by a later run instead of trained again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmodels.csv_safety import write_rows
from medmodels.data.samples import LabelledSet
from medmodels.data.splits import grouped_split
from medmodels.inference import time_inference
from medmodels.record import (
    CurveMean,
    CVFold,
    CVSummary,
    DataSummary,
    Distillation,
    FoldImputation,
    FoldSplit,
    GroupAccuracy,
    ImputationSummary,
    InferenceTime,
    MachineInfo,
    PartSummary,
    RunRecord,
    SplitMetrics,
    SplitSummary,
    TrainingSummary,
)
from medmodels.train.loop import DEFAULT_HEAD_PREFIXES, FitConfig, FitResult, LossFn, TensorData, ce_loss, fit
from medmodels.train.loop import predict_logits
from medmodels.train.losses import class_weights_reciprocal, margin_loss
from medmodels.train.pool import CACHE_DIR, REPO_ROOT, cache_key, decode_all, labelled_indices, recipe_pool
from medmodels.train.recipe import Recipe, RecipeError, recipe_of
from medmodels.zoo.registry import ModelEntry, Preprocess, build_arch, count_parameters, get_entry

log = logging.getLogger(__name__)

WEIGHTS_DIR = REPO_ROOT / "weights"
LOG_DIR = REPO_ROOT / "logs"
FOLD_CACHE_DIR = CACHE_DIR.parent / "folds"
SPLIT_NAMES = ("train", "val", "test")
PREDICTIONS_FILE = "predictions.csv"
AUDIT_PREDICTIONS_FILE = "audit_predictions.csv"


# --------------------------------------------------------------------------- splits


def grouped_parts(recipe: Recipe, labels: np.ndarray, groups: Sequence[str | None]) -> dict[str, np.ndarray]:
    """The fixed by-group train / val / test split of ``split.fractions`` and ``split.seed``."""
    fractions = recipe.split.fractions
    names = [n for n, f in zip(SPLIT_NAMES, fractions) if f > 0]
    parts = grouped_split(labels, groups, [f for f in fractions if f > 0], seed=recipe.split.seed)
    out = {n: np.asarray([], dtype=int) for n in SPLIT_NAMES}
    out.update(dict(zip(names, parts)))
    return out


def fixed_split(recipe: Recipe, labels: np.ndarray, groups: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Train / val / test positions: by group (slide, original image, patient) unless ``random``."""
    fractions = recipe.split.fractions
    if recipe.split.mode == "random":
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(labels))
        rest, test = train_test_split(idx, test_size=fractions[2], stratify=labels,
                                      random_state=recipe.split.seed)
        val_share = fractions[1] / (fractions[0] + fractions[1])
        train, val = (train_test_split(rest, test_size=val_share, stratify=labels[rest],
                                       random_state=recipe.split.seed)
                      if fractions[1] > 0 else (rest, rest[:0]))
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    return grouped_parts(recipe, labels, groups)


def fold_splits(recipe: Recipe, labels: np.ndarray, groups: Sequence[str | None]) -> list[dict[str, np.ndarray]]:
    """Per fold: train / val / test positions, all disjoint by group; fold 1 first.

    Each fold's test part is one ``group_kfold`` fold; a validation part for early stopping
    is split off the remaining groups by the val share of ``split.fractions``. With
    ``split.cv_scope == "development"`` the folds cover only the fixed split's train and val
    groups; its test groups appear in no fold.
    """
    from medmodels.data.splits import group_kfold

    train_share, val_share = recipe.split.fractions[0], recipe.split.fractions[1]
    val_frac = val_share / (train_share + val_share)
    pool = np.arange(len(labels))
    if recipe.split.cv_scope == "development":
        parts = grouped_parts(recipe, labels, groups)
        pool = np.sort(np.concatenate([parts["train"], parts["val"]]))
    out = []
    for rest, test in group_kfold(labels[pool], [groups[i] for i in pool], recipe.split.cv_folds,
                                  seed=recipe.split.seed):
        rest, test = pool[rest], pool[test]
        if val_frac > 0:
            tr, va = grouped_split(labels[rest], [groups[i] for i in rest], [1 - val_frac, val_frac],
                                   seed=recipe.split.seed)
            out.append({"train": rest[tr], "val": rest[va], "test": test})
        else:
            out.append({"train": rest, "val": rest[:0], "test": test})
    return out


def recipe_splits(recipe: Recipe, pool: LabelledSet) -> list[dict[str, np.ndarray]]:
    """The recipe's splits as indices into ``pool`` (labelled samples only): one, or one per fold."""
    labelled = labelled_indices(pool)
    labels = np.asarray([pool.samples[i].label for i in labelled], dtype=int)
    groups = [pool.samples[i].group for i in labelled]
    parts = (fold_splits(recipe, labels, groups) if recipe.split.cv_folds >= 2
             else [fixed_split(recipe, labels, groups)])
    return [{k: labelled[v] for k, v in p.items()} for p in parts]


def model_entry(recipe: Recipe) -> ModelEntry:
    """The registry entry of the recipe's model, with the recipe's input size if it sets one."""
    entry = get_entry(recipe.task, recipe.model_name)
    if recipe.input_size and recipe.input_size != entry.preprocess.input_size:
        pre = dataclasses.replace(entry.preprocess, input_size=recipe.input_size)
        entry = dataclasses.replace(entry, preprocess=pre)
    return entry


# --------------------------------------------------------------------------- one part's tensors


@dataclass
class PartData:
    """One split's (or fold's) tensors and the pool indices they came from."""

    index: dict[str, np.ndarray]
    data: dict[str, TensorData]
    imputation: FoldImputation | None = None


def imputed_training_labels(pool: LabelledSet, split: dict[str, np.ndarray], seed: int
                            ) -> tuple[np.ndarray, np.ndarray, FoldImputation]:
    """(train indices, their labels, report) for ``labels: imputed``.

    The training part gains the unlabelled images of patients that are in neither this
    part's test nor its validation part; their labels come from a random forest fitted on
    the training rows alone. Test and validation parts keep real labels only.
    """
    import pandas as pd

    from medmodels.train.imputation import impute_training_fold

    held = {pool.samples[i].group for part in ("val", "test") for i in split[part]}
    extra = [i for i, s in enumerate(pool.samples) if s.label is None and s.group not in held]
    train = np.concatenate([split["train"], np.asarray(extra, dtype=int)])
    df = pd.DataFrame([dict(s.meta) for s in pool.samples])
    groups = np.asarray([str(s.group) for s in pool.samples])
    result = impute_training_fold(df, train, groups=groups, seed=seed)
    real = np.asarray([pool.samples[i].label for i in split["train"]], dtype=int)
    labels = result.labels.astype(int)
    if not np.array_equal(labels[: len(real)], real):
        raise AssertionError("imputation changed a real label")
    report = FoldImputation(n_real=int(len(real)), n_imputed=int(result.n_imputed),
                            imputed_died=int((labels[len(real):] == 1).sum()),
                            forest_cv_accuracy_mean=result.cv_accuracy_mean,
                            forest_cv_accuracy_std=result.cv_accuracy_std)
    return train, labels, report


def part_data(recipe: Recipe, pool: LabelledSet, images: torch.Tensor, split: dict[str, np.ndarray]) -> PartData:
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
    return PartData(index, data, report)


# --------------------------------------------------------------------------- losses and the fit


def build_loss(recipe: Recipe, train_labels: np.ndarray, n_classes: int,
               val_labels: np.ndarray | None = None) -> tuple[LossFn, LossFn]:
    """(training loss, validation loss) for the recipe's loss and balancing (distillation aside).

    Class weights (``balance="class_weight"``) weight the training loss only. The validation
    loss that picks the best epoch is unweighted, or, with ``val_loss="balanced"``, weighted
    so that every class of the validation part counts equally.
    """
    weights = None
    if recipe.balance == "class_weight":
        weights = class_weights_reciprocal(np.bincount(train_labels, minlength=n_classes))
    val_weights = None
    if recipe.val_loss == "balanced" and val_labels is not None and len(val_labels):
        counts = np.bincount(val_labels, minlength=n_classes).astype(float)
        present = counts > 0
        w = np.zeros(n_classes)
        w[present] = counts.sum() / (present.sum() * counts[present])
        val_weights = torch.tensor(w, dtype=torch.float32)
    if recipe.loss == "margin":
        def margin(w: torch.Tensor | None) -> LossFn:
            return lambda logits, y, x, idx: margin_loss(logits, y, class_weights=w)

        return margin(weights), margin(val_weights)
    return ce_loss(weights), ce_loss(val_weights)


def fit_config(recipe: Recipe, entry: ModelEntry) -> FitConfig:
    prefixes = tuple(entry.kwargs.get("head_prefixes", DEFAULT_HEAD_PREFIXES))  # type: ignore[arg-type]
    return FitConfig(
        epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        optimizer=recipe.optimizer, weight_decay=recipe.weight_decay, augment=recipe.augment,
        lr_schedule=recipe.lr_schedule, lr_factor=recipe.lr_factor, lr_patience=recipe.lr_patience,
        balance="none" if recipe.balance == "class_weight" else recipe.balance,
        freeze_epochs=recipe.freeze_epochs, freeze_lr=recipe.freeze_lr,
        early_stopping_patience=recipe.early_stopping_patience, max_minutes=recipe.max_minutes,
        seed=recipe.seed, head_prefixes=prefixes, recalibrate_bn=recipe.recalibrate_bn,
    )


class Teacher:
    """The distillation teacher: the trained model, and (``cached``) its logits on every pool image."""

    def __init__(self, recipe: Recipe, pool: LabelledSet, images: torch.Tensor, pre: Preprocess,
                 model: nn.Module | None = None, progress: IO[str] | None = None) -> None:
        from medmodels.train.distill import freeze

        assert recipe.distill is not None
        self.record: RunRecord | None = None
        if model is None and recipe.data == "synthetic":
            # CI recipes: an untrained teacher of the named architecture (engine check only).
            entry = dataclasses.replace(get_entry(recipe.task, recipe.distill.teacher), preprocess=pre)
            torch.manual_seed(recipe.seed)
            model = build_arch(entry)
        elif model is None:
            from medmodels.hub import load_trained

            model, card = load_trained(recipe.task, recipe.distill.teacher)
            self.record = card.record
        self.model = freeze(model)
        self._logits: torch.Tensor | None = None
        self._images, self._pre, self._progress = images, pre, progress
        created = self.record.created if self.record else None
        self._key = hashlib.sha256((str(created) + "".join(s.name for s in pool.samples)).encode()).hexdigest()[:16]

    @property
    def created(self) -> str | None:
        return self.record.created if self.record else None

    @property
    def test_groups(self) -> set[str]:
        """The groups the teacher was *not* trained on (its test part)."""
        return set(self.record.test_groups()) if self.record else set()

    def logits(self) -> torch.Tensor:
        from medmodels.train.distill import teacher_logits

        if self._logits is None:
            path = CACHE_DIR / f"teacher_logits_{self._key}.pt"
            if self.record is not None and path.is_file():
                self._logits = torch.load(path, weights_only=True)
            else:
                t0 = time.perf_counter()
                self._logits = teacher_logits(self.model, self._images, self._pre, progress=self._progress)
                log.info("teacher logits for %d images in %.0fs", len(self._images), time.perf_counter() - t0)
                if self.record is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(self._logits, path)
        return self._logits


def train_model(recipe: Recipe, entry: ModelEntry, part: PartData, teacher: Teacher | None,
                progress: IO[str] | None) -> tuple[nn.Module, FitResult]:
    """Build and fit the recipe's model on one split or fold: plain, or distilled."""
    pre = entry.preprocess
    torch.manual_seed(recipe.seed)
    model = build_arch(entry, imagenet=recipe.init == "imagenet")
    train_fn, val_fn = build_loss(recipe, part.data["train"].labels.numpy(), len(entry.classes),
                                  part.data["val"].labels.numpy())
    cfg = fit_config(recipe, entry)
    if recipe.distill is None:
        return model, fit(model, part.data["train"], part.data["val"], pre, cfg, train_fn, val_fn, progress)
    from medmodels.train.distill import distill_fit

    assert teacher is not None
    weights = (class_weights_reciprocal(np.bincount(part.data["train"].labels.numpy(),
                                                    minlength=len(entry.classes)))
               if recipe.balance == "class_weight" else None)
    kd = recipe.distill
    source: dict[str, Any] = (
        {"cached_logits": teacher.logits()[torch.as_tensor(part.index["train"], dtype=torch.long)]}
        if kd.teacher_logits == "cached" else {"teacher": teacher.model})
    result = distill_fit(model, part.data["train"], part.data["val"], pre, cfg, temperature=kd.temperature,
                         alpha=kd.alpha, class_weights=weights, val_loss_fn=val_fn, progress=progress, **source)
    return model, result


# --------------------------------------------------------------------------- measuring


def view_probabilities(model: nn.Module, images: torch.Tensor, pre: Preprocess) -> np.ndarray:
    """Softmax probabilities [N, C] of uint8 model views."""
    if len(images) == 0:
        return np.zeros((0, 0))
    return F.softmax(predict_logits(model, images, pre), dim=1).numpy()


def split_metrics_of(labels: np.ndarray, probs: np.ndarray, entry: ModelEntry) -> SplitMetrics | None:
    from medmodels.metrics import compute_metrics

    if len(labels) == 0:
        return None
    return SplitMetrics.from_report(compute_metrics(labels, probs, entry.classes, entry.task_spec.positive_index))


def split_metrics(model: nn.Module, data: TensorData, entry: ModelEntry) -> SplitMetrics | None:
    """Every metric of ``compute_metrics`` for one part (None when it is empty)."""
    if len(data) == 0:
        return None
    return split_metrics_of(data.labels.numpy(), view_probabilities(model, data.images, entry.preprocess), entry)


def per_group_accuracy(model: nn.Module, entry: ModelEntry, pool: LabelledSet, part: PartData
                       ) -> list[GroupAccuracy]:
    """Test accuracy per group (slide, original image) and true class.

    With few groups in a test split, one group with an unusual stain can decide the
    headline number; this table shows where the errors are.
    """
    data = part.data["test"]
    if len(data) == 0:
        return []
    predicted = view_probabilities(model, data.images, entry.preprocess).argmax(1)
    truth = data.labels.numpy()
    rows: dict[tuple[str, int], list[bool]] = {}
    for j, i in enumerate(part.index["test"]):
        rows.setdefault((str(pool.samples[i].group), int(truth[j])), []).append(bool(predicted[j] == truth[j]))
    return [GroupAccuracy(group=g, true_class=pool.classes[c], n=len(v), accuracy=float(np.mean(v)))
            for (g, c), v in sorted(rows.items())]


def inference_times(model: nn.Module, pre: Preprocess) -> InferenceTime:
    """CPU milliseconds per image at batch 1 and batch 32, on the threads of this run."""
    return InferenceTime(threads=torch.get_num_threads(), **time_inference(model, pre, batch_sizes=(1, 32)))


def part_summary(pool: LabelledSet, idx: np.ndarray, grouped: bool) -> PartSummary:
    counts = Counter(pool.samples[i].label for i in idx)
    groups = sorted({str(pool.samples[i].group) for i in idx if pool.samples[i].group is not None})
    return PartSummary(
        n_images=int(len(idx)),
        class_counts={pool.classes[k]: int(counts.get(k, 0)) for k in range(len(pool.classes))},
        n_groups=len(groups) if grouped else None,
        groups=groups if grouped else None,
    )


def data_summary(recipe: Recipe, pool: LabelledSet) -> DataSummary:
    labelled = [s for s in pool.samples if s.label is not None]
    datasets = Counter(s.meta.get("dataset") for s in labelled if s.meta.get("dataset"))
    return DataSummary(
        source=recipe.data, n_images=len(labelled),
        n_groups=len({s.group for s in labelled if s.group is not None}) or None,
        class_counts={c: sum(1 for s in labelled if s.label == k) for k, c in enumerate(pool.classes)},
        n_unlabelled=(len(pool) - len(labelled)) or None,
        datasets=dict(datasets) or None,
    )


def part_record(recipe: Recipe, entry: ModelEntry, pool: LabelledSet, part: PartData, model: nn.Module,
                result: FitResult) -> RunRecord:
    """The record of one fit: recipe, data, split, training and the metrics of its parts."""
    grouped = recipe.split.mode == "grouped"
    parts = {}
    for name in SPLIT_NAMES:
        idx = part.index[name]
        if name == "train" and part.imputation is not None:
            idx = idx[: part.imputation.n_real]
        parts[name] = part_summary(pool, idx, grouped)
    if part.imputation is not None:
        parts["train"].n_imputed_images = part.imputation.n_imputed
    record = RunRecord(
        task=recipe.task, name=recipe.name, model=entry.name, arch=entry.arch,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        recipe=recipe.to_dict(), preprocess=dataclasses.asdict(entry.preprocess),
        parameters=count_parameters(model),
        data=data_summary(recipe, pool),
        split=SplitSummary(mode=recipe.split.mode,
                           by="group" if grouped else "image (leaky: near-duplicates cross splits)",
                           fractions=list(recipe.split.fractions), seed=recipe.split.seed,
                           cv_folds=recipe.split.cv_folds or None, **parts),
        training=TrainingSummary(seconds=round(result.seconds, 2), best_epoch=result.best_epoch,
                                 best_val_loss=result.best_val_loss, epochs_run=result.epochs_run,
                                 stop_reason=result.stop_reason, history=result.history),
        machine=MachineInfo.current(),
        imputation_fold=part.imputation,
    )
    record.val = split_metrics(model, part.data["val"], entry)
    record.test = split_metrics(model, part.data["test"], entry)
    if grouped:
        record.test_per_group = per_group_accuracy(model, entry, pool, part)
    return record


def cumulative_rates(cm: list[list[int]], positive_index: int) -> dict[str, float | int | None]:
    """TPR/TNR/FPR/FNR from the confusion matrix summed over folds (rows = truth)."""
    n = 1 - positive_index
    tp, fn = cm[positive_index][positive_index], cm[positive_index][n]
    fp, tn = cm[n][positive_index], cm[n][n]

    def ratio(a: int, b: int) -> float | None:
        return None if b == 0 else a / b

    return {"tp": tp, "tn": tn, "fp": fp, "fn": fn, "tpr": ratio(tp, tp + fn), "tnr": ratio(tn, tn + fp),
            "fpr": ratio(fp, fp + tn), "fnr": ratio(fn, fn + tp)}


def summarize_folds(folds: list[CVFold], scores: list[tuple[np.ndarray, np.ndarray]], n_planned: int,
               positive_index: int | None) -> CVSummary:
    """Mean and sd of every numeric test metric over folds, the summed confusion matrix, mean curves."""
    from medmodels.metrics import mean_curve, pr_curve_data, roc_curve_data

    summary = CVSummary(folds=folds, n_folds=len(folds))
    if len(folds) < n_planned:
        used = ", ".join(str(f.fold) for f in folds)
        summary.note = (f"only fold{'s' if len(folds) > 1 else ''} {used} of {n_planned} "
                        f"{'were' if len(folds) > 1 else 'was'} trained (CPU budget)"
                        + ("; mean and sd are over those folds" if len(folds) > 1 else ""))
    if len(folds) < 2:
        return summary
    reports = [f.test.metrics for f in folds]
    keys = sorted({k for m in reports for k, v in m.items() if isinstance(v, (int, float))})
    summary.mean, summary.std = {}, {}
    for k in keys:
        values = [m[k] for m in reports if isinstance(m.get(k), (int, float))]
        summary.mean[k] = float(np.mean(values)) if values else None
        summary.std[k] = float(np.std(values)) if values else None
    cm = np.sum([np.asarray(f.test.confusion_matrix) for f in folds], axis=0).astype(int).tolist()
    summary.confusion_matrix_sum = cm
    if positive_index is not None:
        summary.cumulative_rates = cumulative_rates(cm, positive_index)
        roc = mean_curve([roc_curve_data(y, s) for y, s in scores])
        pr = mean_curve([pr_curve_data(y, s) for y, s in scores])
        summary.roc_mean = CurveMean(roc.x, roc.y, roc.y_std, roc.auc, roc.auc_std, list(roc.notes))
        summary.pr_mean = CurveMean(pr.x, pr.y, pr.y_std, pr.auc, pr.auc_std, list(pr.notes))
    return summary


def prediction_rows(pool: LabelledSet, index: np.ndarray, probs: np.ndarray, fold: int | str) -> list[dict[str, Any]]:
    """predictions.csv rows: file, patient (group), label, score_<class>..., fold."""
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
        write_rows(fh, formatted, columns)  # file names and patient ids come from users


# --------------------------------------------------------------------------- folds and their cache


@dataclass
class FoldOutcome:
    """What the CV summary needs from one trained fold (the model only for the one shipped)."""

    fold: CVFold
    record: RunRecord
    rows: list[dict[str, Any]]
    labels: list[int]  # 1 = positive class, for the fold-averaged curves
    scores: list[float]
    model: nn.Module | None = None


def fold_cache_dir(recipe: Recipe, teacher: Teacher | None) -> Path | None:
    """Where trained folds of this exact recipe (notes aside) are kept between runs (None: CI data)."""
    if recipe.data == "synthetic":
        return None
    key = {k: v for k, v in recipe.to_dict().items() if k != "notes"}
    key["teacher_created"] = teacher.created if teacher else None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return FOLD_CACHE_DIR / f"{recipe.task}_{recipe.name}_{digest}"


def _save_fold(cache: Path | None, k: int, outcome: FoldOutcome) -> None:
    if cache is None:
        return
    cache.mkdir(parents=True, exist_ok=True)
    data = {"record": outcome.record.to_dict(), "rows": outcome.rows, "labels": outcome.labels,
            "scores": outcome.scores}
    (cache / f"fold_{k}.json").write_text(json.dumps(data))
    if outcome.model is not None:
        torch.save(outcome.model.state_dict(), cache / f"fold_{k}.pt")


def _load_fold(cache: Path | None, k: int, entry: ModelEntry, keep_model: bool) -> FoldOutcome | None:
    if cache is None or not (cache / f"fold_{k}.json").is_file():
        return None
    data = json.loads((cache / f"fold_{k}.json").read_text())
    record = RunRecord.from_dict(data["record"])
    model = None
    if keep_model:
        weights = cache / f"fold_{k}.pt"
        if not weights.is_file():
            return None
        model = build_arch(entry)
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
    return FoldOutcome(_fold_entry(record, k, None, None), record, data["rows"], data["labels"],
                       data["scores"], model)


def _fold_entry(record: RunRecord, k: int, teacher: Teacher | None, seen: int | None) -> CVFold:
    assert record.test is not None and record.split.train and record.split.val and record.split.test
    training = dataclasses.replace(record.training, history=None)
    return CVFold(fold=k, test=record.test, split=FoldSplit(record.split.train, record.split.val, record.split.test),
                  training=training, teacher_saw_test_groups=seen, imputation=record.imputation_fold)


def train_fold(recipe: Recipe, entry: ModelEntry, pool: LabelledSet, images: torch.Tensor,
               split: dict[str, np.ndarray], k: int, teacher: Teacher | None, keep_model: bool,
               progress: IO[str] | None) -> FoldOutcome:
    """Train fold ``k`` (seed + k - 1) and collect what the CV summary needs from it."""
    part = part_data(recipe, pool, images, split)
    model, result = train_model(dataclasses.replace(recipe, seed=recipe.seed + k - 1), entry, part, teacher, progress)
    model.eval()
    if recipe.half:
        round_to_half(model)
    record = part_record(recipe, entry, pool, part, model, result)
    probs = view_probabilities(model, part.data["test"].images, entry.preprocess)
    labels = part.data["test"].labels.numpy()
    pos = entry.task_spec.positive_index
    seen = None
    if teacher is not None and teacher.test_groups:
        seen = len({str(pool.samples[i].group) for i in part.index["test"]} - teacher.test_groups)
    return FoldOutcome(_fold_entry(record, k, teacher, seen), record,
                       prediction_rows(pool, part.index["test"], probs, k),
                       (labels == pos).astype(int).tolist() if pos is not None else [],
                       probs[:, pos].tolist() if pos is not None else [],
                       model if keep_model else None)


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[IO[str]]:
    """Log everything (and the tqdm bars) of this run to ``path`` as well as stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", encoding="utf-8")
    handler = logging.StreamHandler(handle)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield handle
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handle.close()


def default_out_dir(recipe: Recipe) -> Path:
    if recipe.save_weights:
        return WEIGHTS_DIR / recipe.task / recipe.name
    return WEIGHTS_DIR / recipe.task / recipe.model_name / recipe.name


def run(recipe: Recipe, out_dir: Path | str | None = None, *, teacher_model: nn.Module | None = None,
        only_folds: Sequence[int] = ()) -> Path:
    """Train the recipe and write its run folder; returns the folder.

    ``out_dir`` defaults to ``weights/<task>/<name>`` (metrics-only recipes:
    ``weights/<task>/<model>/<name>``). ``only_folds`` trains just those folds into the fold
    cache and returns the cache folder (parallel runs; a later plain run assembles them).
    ``teacher_model`` replaces the recipe's teacher (tests). The log goes to ``logs/<task>/<name>.log``.
    """
    out = Path(out_dir) if out_dir is not None else default_out_dir(recipe)
    torch.set_num_threads(max(1, recipe.threads))
    torch.manual_seed(recipe.seed)
    with run_log(LOG_DIR / recipe.task / f"{recipe.name}.log") as progress:
        log.info("recipe %s: %s", recipe.name, json.dumps(recipe.to_dict()))
        entry = model_entry(recipe)
        pool = recipe_pool(recipe)
        splits = recipe_splits(recipe, pool)
        if any(len(s["train"]) == 0 for s in splits) or (recipe.split.cv_folds < 2 and len(splits[0]["test"]) == 0):
            raise RecipeError(f"Recipe {recipe.name}: the split left the training or test part empty.")
        images = decode_all(pool, entry.preprocess, cache_key(recipe, entry.preprocess, pool))
        teacher = (Teacher(recipe, pool, images, entry.preprocess, teacher_model, progress)
                   if recipe.distill is not None else None)
        if recipe.split.cv_folds < 2:
            record, model, rows = _fixed_split_run(recipe, entry, pool, images, splits[0], teacher, progress)
        else:
            cache = fold_cache_dir(recipe, teacher)
            done = _cross_validate(recipe, entry, pool, images, splits, teacher, cache, only_folds, progress)
            if done is None:
                return cache or out
            record, model, rows = done
        if teacher is not None:
            record.distillation = Distillation(
                teacher=recipe.distill.teacher if recipe.distill else None,
                teacher_logits=recipe.distill.teacher_logits if recipe.distill else "online",
                teacher_test_groups_equal_fold1_test=set(record.test_groups()) == teacher.test_groups)
        record.inference_ms = inference_times(model, entry.preprocess)
        audit_rows: list[dict[str, Any]] = []
        if recipe.audit and recipe.data != "synthetic":
            from medmodels.train.audit import run_audit

            audited = run_audit(model, entry, pool)
            if audited is not None:
                record.audit, audit_rows = audited.audits, audited.rows
        write_run_folder(model, entry, recipe, record, out, rows, audit_rows)
        log.info("wrote %s (test accuracy %s)", out, record.test_metrics.get("accuracy"))
    return out


def _fixed_split_run(recipe: Recipe, entry: ModelEntry, pool: LabelledSet, images: torch.Tensor,
                     split: dict[str, np.ndarray], teacher: Teacher | None, progress: IO[str] | None
                     ) -> tuple[RunRecord, nn.Module, list[dict[str, Any]]]:
    part = part_data(recipe, pool, images, split)
    model, result = train_model(recipe, entry, part, teacher, progress)
    model.eval()
    if recipe.half:
        round_to_half(model)
    return part_record(recipe, entry, pool, part, model, result), model, []


def _cross_validate(recipe: Recipe, entry: ModelEntry, pool: LabelledSet, images: torch.Tensor,
                    splits: list[dict[str, np.ndarray]], teacher: Teacher | None, cache: Path | None,
                    only_folds: Sequence[int], progress: IO[str] | None
                    ) -> tuple[RunRecord, nn.Module, list[dict[str, Any]]] | None:
    n = len(splits)
    n_run = recipe.split.run_folds or n
    shipped_fold = {"fold1": 1, "last_fold": n_run, "all_data": None}[recipe.split.ship]
    outcomes: list[FoldOutcome] = []
    for k in (list(only_folds) or range(1, n_run + 1)):
        keep = k == shipped_fold
        outcome = _load_fold(cache, k, entry, keep)
        if outcome is None:
            log.info("fold %d/%d: %d train, %d val, %d test images", k, n, len(splits[k - 1]["train"]),
                     len(splits[k - 1]["val"]), len(splits[k - 1]["test"]))
            outcome = train_fold(recipe, entry, pool, images, splits[k - 1], k, teacher, keep, progress)
            _save_fold(cache, k, outcome)
        else:
            log.info("fold %d/%d: loaded from %s", k, n, cache)
        log.info("fold %d/%d: test accuracy %s", k, n, outcome.record.test_metrics.get("accuracy"))
        outcomes.append(outcome)
    if only_folds:
        return None
    rows = [r for o in outcomes for r in o.rows]
    cv = summarize_folds([o.fold for o in outcomes], [(np.asarray(o.labels), np.asarray(o.scores)) for o in outcomes],
                    n, entry.task_spec.positive_index)
    if shipped_fold is not None:
        shipped = next(o for o in outcomes if o.fold.fold == shipped_fold)
        record, model = shipped.record, shipped.model
        record.test_is = (f"fold 1 of the grouped cross-validation (the held-out split)" if shipped_fold == 1
                          else f"the last fold ({shipped_fold} of {n}) of the grouped cross-validation")
    else:
        record, model = _fit_all_data(recipe, entry, pool, images, teacher, rows, progress)
    record.cv = cv
    if recipe.labels == "imputed" and recipe.data != "synthetic":
        record.imputation = imputation_overview(pool, recipe.seed)
    assert model is not None
    return record, model, rows


def _fit_all_data(recipe: Recipe, entry: ModelEntry, pool: LabelledSet, images: torch.Tensor,
                  teacher: Teacher | None, rows: list[dict[str, Any]], progress: IO[str] | None
                  ) -> tuple[RunRecord, nn.Module]:
    """Refit on every labelled image (no test part); ``test`` becomes the pooled out-of-fold report."""
    labelled = labelled_indices(pool)
    part = part_data(recipe, pool, images, {"train": labelled, "val": labelled[:0], "test": labelled[:0]})
    model, result = train_model(recipe, entry, part, teacher, progress)
    model.eval()
    if recipe.half:
        round_to_half(model)
    record = part_record(recipe, entry, pool, part, model, result)
    classes = list(pool.classes)
    y = np.asarray([classes.index(r["label"]) for r in rows], dtype=int)
    probs = np.asarray([[r[f"score_{c}"] for c in classes] for r in rows])
    record.test = split_metrics_of(y, probs, entry)
    record.test_per_group = None
    record.test_is = ("pooled out-of-fold predictions of the CV models (the shipped model was refitted "
                      "on all labelled images and has no held-out test part of its own)")
    return record, model


def imputation_overview(pool: LabelledSet, seed: int) -> ImputationSummary:
    """The forest's own grouped 5-fold accuracy on every labelled row (the paper's ~92.5%)."""
    import pandas as pd

    from medmodels.train.imputation import impute_survival

    groups = [str(s.group) for s in pool.samples]
    result = impute_survival(pd.DataFrame([dict(s.meta) for s in pool.samples]), groups=groups, seed=seed)
    return ImputationSummary(
        cv_accuracy_mean=result.cv_accuracy_mean, cv_accuracy_std=result.cv_accuracy_std,
        n_labelled=result.n_labelled, n_unlabelled=result.n_imputed,
        features=["went_icu", "needed_supplemental_O2", "intubation_present", "extubated",
                  "age binned 0-30/31-40/41-50/51-60/61-70/71-80/81-100"],
        cv="StratifiedGroupKFold(5) by patient group over the labelled rows")


def write_run_folder(model: nn.Module, entry: ModelEntry, recipe: Recipe, record: RunRecord, out: Path,
                     rows: Sequence[dict[str, Any]] = (), audit_rows: Sequence[dict[str, Any]] = ()) -> None:
    """Weights, config, record and card; or, for ``save_weights: false``, record and card only."""
    from medmodels.hub import save_model_folder

    out.mkdir(parents=True, exist_ok=True)
    if rows:
        write_predictions(out / PREDICTIONS_FILE, list(rows), entry.classes)
    if audit_rows:
        write_predictions(out / AUDIT_PREDICTIONS_FILE, list(audit_rows), entry.classes)
    if recipe.save_weights:
        save_model_folder(model, entry, out, record=record, card="", half=recipe.half)
    else:
        record.write(out)
    write_card(out)


def write_card(folder: Path | str) -> Path:
    """(Re)write a run folder's README.md from its record (the report package renders it)."""
    from medmodels.report.cards import render_card

    folder = Path(folder)
    path = folder / "README.md"
    path.write_text(render_card(RunRecord.read(folder), folder), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- maintenance


def test_pool(record: RunRecord) -> LabelledSet:
    """The test samples a record was computed on (rebuilt from its recipe and split)."""
    recipe = recipe_of(record)
    pool = recipe_pool(recipe)
    split = recipe_splits(recipe, pool)[0]
    idx = split["test"]
    wanted = set(record.test_groups())
    if wanted and {str(pool.samples[i].group) for i in idx} != wanted:
        raise RecipeError(
            f"{record.name}: the test split rebuilt from the recipe differs from the one in "
            "metrics.json (the data or the split code changed)."
        )
    return LabelledSet([pool.samples[i] for i in idx], pool.classes)


def reevaluate(folder: Path | str) -> SplitMetrics | None:
    """Re-compute the test metrics of a trained weights folder on its own test split.

    The model is rebuilt from the folder (sha256 and architecture checked by the hub) and the
    test split from the recipe and group ids in its record, so the result should equal the
    stored ``test`` metrics up to floating-point noise.
    """
    from medmodels.hub import load_state

    folder = Path(folder)
    record = RunRecord.read(folder)
    entry = model_entry(recipe_of(record))
    state, _ = load_state(folder, entry)
    model = build_arch(entry)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.eval()
    test = test_pool(record)
    images = decode_all(test, entry.preprocess)
    return split_metrics(model, TensorData(images, torch.as_tensor(test.labels, dtype=torch.long)), entry)


def round_to_half(model: nn.Module) -> nn.Module:
    """Round every float tensor through fp16, so metrics describe the model as it is stored."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model
