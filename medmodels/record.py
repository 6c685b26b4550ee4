"""The run record: what one training run produced, typed, versioned, read and written in one place.

``weights/<task>/<model>/metrics.json`` (and a metrics-only comparison run's
``weights/<task>/<model>/<run>/metrics.json``) holds one :class:`RunRecord`. The trainer
writes it with :meth:`RunRecord.write`; the cards, the report, the Hub push and the
dashboard read it with :meth:`RunRecord.read`. Nothing else opens the file, so a field has
one name, one type and one meaning, and a record that does not fit is refused loudly
(:class:`RecordError`) instead of being half-read through ``.get()`` chains.

Timings taken in one process for several models live in their own record
(:class:`medmodels.latency.TimingRecord`), and the task-wide image-source audit in
:class:`SourceAudit`: a run never rewrites another run's record.
``scripts/migrate_run_records.py`` upgrades older files (it moves and renames, never changes a number).
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmodels.errors import MedModelsError

SCHEMA_VERSION = 2
RECORD_FILE = "metrics.json"
SOURCE_AUDIT_FILE = "source_audit.json"

Number = float | int | None


class RecordError(MedModelsError):
    """A run record (metrics.json) is missing, not JSON, or does not fit the schema."""


# --------------------------------------------------------------------------- codec


def _decode(hint: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as the type ``hint`` declares, or a RecordError naming the field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 or all(a in (int, float) for a in inner):
            return _decode(inner[0] if len(inner) == 1 else float, value, where)
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise RecordError(f"{where} must be a mapping, got {type(value).__name__}.")
        return _decode_dataclass(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{where} must be a list, got {type(value).__name__}.")
        return [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where} must be a mapping, got {type(value).__name__}.")
        return {k: _decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint in (int, float):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(f"{where} must be a number, got {value!r}.")
        return value  # kept as written: an int stays an int, so files round-trip exactly
    if hint in (str, bool) and not isinstance(value, hint):
        raise RecordError(f"{where} must be a {hint.__name__}, got {value!r}.")
    return value


def _decode_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise RecordError(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(hints)}.")
    kwargs = {k: _decode(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise RecordError(f"{where} is incomplete: {err}.") from None


def _encode(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any) -> str:
    """The canonical text of a record: two-space indent, newline at the end."""
    return json.dumps(_encode(obj), indent=2) + "\n"


def read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"No {what} at {path}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(f"{path} is not valid JSON ({err}).") from None


# --------------------------------------------------------------------------- parts


@dataclass
class SplitMetrics:
    """Every metric of one evaluated part (``medmodels.metrics.MetricReport`` as data)."""

    n: int
    metrics: dict[str, Number]
    per_class: dict[str, dict[str, Number]]
    confusion_matrix: list[list[int]]
    classes: list[str]
    threshold: float | None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_report(cls, report: Any) -> SplitMetrics:
        d = report.to_dict()
        return cls(n=d["n"], metrics=d["metrics"], per_class=d["per_class"],
                   confusion_matrix=d["confusion_matrix"], classes=d["classes"],
                   threshold=d["threshold"], notes=list(report.notes))

    def report(self) -> Any:
        """The ``MetricReport`` these numbers came from (for tables and charts)."""
        from medmodels.metrics import MetricReport

        return MetricReport(metrics=dict(self.metrics), per_class={k: dict(v) for k, v in self.per_class.items()},
                            confusion_matrix=[list(r) for r in self.confusion_matrix],
                            classes=tuple(self.classes), threshold=self.threshold, notes=tuple(self.notes))


@dataclass
class PartSummary:
    """One part (train, val or test) of a split: size, classes and its group ids."""

    n_images: int
    class_counts: dict[str, int]
    n_groups: int | None
    groups: list[str] | None
    n_imputed_images: int | None = None  # training images whose label was imputed in this fold


@dataclass
class SplitSummary:
    """How the samples were split; ``train``/``val``/``test`` are None only for untrained folders."""

    mode: str
    by: str | None
    fractions: list[float]
    seed: int
    cv_folds: int | None = None
    train: PartSummary | None = None
    val: PartSummary | None = None
    test: PartSummary | None = None


@dataclass
class DataSummary:
    source: str
    n_images: int
    n_groups: int | None
    class_counts: dict[str, int]
    n_unlabelled: int | None = None
    datasets: dict[str, int] | None = None


@dataclass
class TrainingSummary:
    seconds: float
    best_epoch: int
    epochs_run: int
    stop_reason: str
    best_val_loss: float | None = None
    history: list[dict[str, Any]] | None = None


@dataclass
class MachineInfo:
    cpu_count: int | None
    torch_threads: int
    torch: str
    python: str
    platform: str
    processor: str

    @classmethod
    def current(cls) -> MachineInfo:
        """This machine and process, for a record of what ran where."""
        import os
        import platform

        import torch

        return cls(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                   python=platform.python_version(), platform=platform.platform(),
                   processor=platform.processor() or platform.machine())


@dataclass
class InferenceTime:
    """CPU milliseconds per image, measured right after training (not comparable across runs)."""

    threads: int | None
    ms_per_image_batch1: float
    ms_per_image_batch32: float | None = None


@dataclass
class GroupAccuracy:
    """Test accuracy of one group (slide, original image) and true class."""

    group: str
    true_class: str
    n: int
    accuracy: float


@dataclass
class CurveMean:
    """A fold-averaged ROC or PR curve (``medmodels.metrics.mean_curve``)."""

    x: list[float]
    y: list[float]
    y_std: list[float]
    auc: float | None
    auc_std: float | None
    notes: list[str] = field(default_factory=list)


@dataclass
class FoldImputation:
    """Labels imputed for one training part (the forest saw the training rows only)."""

    n_real: int
    n_imputed: int
    imputed_died: int
    forest_cv_accuracy_mean: float | None
    forest_cv_accuracy_std: float | None


@dataclass
class FoldSplit:
    train: PartSummary
    val: PartSummary
    test: PartSummary


@dataclass
class CVFold:
    fold: int
    test: SplitMetrics
    split: FoldSplit
    training: TrainingSummary
    teacher_saw_test_groups: int | None = None
    imputation: FoldImputation | None = None


@dataclass
class CVSummary:
    """Grouped k-fold cross-validation: every fold, mean and sd of each metric, pooled matrix."""

    folds: list[CVFold]
    n_folds: int
    mean: dict[str, Number] | None = None
    std: dict[str, Number] | None = None
    confusion_matrix_sum: list[list[int]] | None = None
    cumulative_rates: dict[str, Number] | None = None  # TPR/TNR/FPR/FNR of the summed matrix
    roc_mean: CurveMean | None = None
    pr_mean: CurveMean | None = None
    note: str | None = None  # e.g. which folds a budget-cut run used


@dataclass
class ImputationSummary:
    """The imputation forest's own grouped CV over every labelled row (the mortality paper's ~92.5%)."""

    cv_accuracy_mean: float | None
    cv_accuracy_std: float | None
    n_labelled: int
    n_unlabelled: int
    features: list[str]
    cv: str


@dataclass
class Distillation:
    teacher: str | None
    teacher_logits: str
    teacher_test_groups_equal_fold1_test: bool


@dataclass
class Storage:
    """Weights stored in fp16 after training; the fp32 test metrics are kept for comparison."""

    dtype: str
    converted_after_training: bool
    fp32_test_metrics: dict[str, Number] | None = None


@dataclass
class ViewAudit:
    """How much the X-ray view alone predicts the label (a confounder)."""

    what: str
    roc_auc: float | None
    per_view: dict[str, dict[str, int]]


@dataclass
class Audits:
    """Shortcut audits of one run's model (see ``medmodels.train.audit``)."""

    actualmed: SplitMetrics | None = None  # covid: the one source with both classes, never trained on
    actualmed_error: str | None = None
    view_only: ViewAudit | None = None  # mortality: view as the only predictor


@dataclass
class SourceAudit:
    """Task-wide side record (``weights/covid/source_audit.json``): can the image source be predicted?"""

    what: str
    n_images: int
    n_nih: int
    n_ieee8023: int
    cv: str
    accuracy_mean: float
    accuracy_std: float
    fold_accuracy: list[float]
    balanced_accuracy: float
    roc_auc: float
    label_from_source_rule_accuracy: float
    created: str | None = None

    @classmethod
    def read(cls, path: Path | str) -> SourceAudit:
        return _decode_dataclass(cls, read_json_file(Path(path), "source audit"), Path(path).name)

    def write(self, path: Path | str) -> Path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(to_json(self), encoding="utf-8")
        return Path(path)


# --------------------------------------------------------------------------- the record


@dataclass
class RunRecord:
    """One training run: recipe, data, split, training, measured metrics, timings and audits.

    ``test`` holds what ``test_is`` says (a held-out split, fold 1 of a CV, or pooled
    out-of-fold predictions); ``cv`` the folds when the run cross-validated.
    """

    task: str
    name: str
    model: str
    arch: str
    parameters: int
    data: DataSummary
    split: SplitSummary
    training: TrainingSummary
    schema: int = SCHEMA_VERSION
    created: str | None = None
    recipe: dict[str, Any] | None = None  # ``Recipe.to_dict()``; ``train.recipe.recipe_of(record)`` types it
    preprocess: dict[str, Any] | None = None
    untrained: bool = False
    machine: MachineInfo | None = None
    val: SplitMetrics | None = None
    test: SplitMetrics | None = None
    test_is: str | None = None
    test_per_group: list[GroupAccuracy] | None = None
    cv: CVSummary | None = None
    inference_ms: InferenceTime | None = None
    audit: Audits | None = None
    imputation: ImputationSummary | None = None
    imputation_fold: FoldImputation | None = None
    distillation: Distillation | None = None
    storage: Storage | None = None

    # ------------------------------------------------------------- reading, writing

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = RECORD_FILE) -> RunRecord:
        if not isinstance(data, dict):
            raise RecordError(f"{where} must hold a mapping.")
        version = data.get("schema", 1)
        if version != SCHEMA_VERSION:
            raise RecordError(f"{where} has schema version {version}, this code reads {SCHEMA_VERSION}; "
                              "run scripts/migrate_run_records.py.")
        return _decode_dataclass(cls, data, where)

    @classmethod
    def from_json(cls, text: str, where: str = RECORD_FILE) -> RunRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecordError(f"{where} is not valid JSON ({err}).") from None
        return cls.from_dict(data, where)

    @classmethod
    def read(cls, path: Path | str) -> RunRecord:
        """The record at ``path`` (a metrics.json, or the run folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / RECORD_FILE
        return cls.from_dict(read_json_file(path, "run record"), str(path))

    def to_dict(self) -> dict[str, Any]:
        data = _encode(self)
        return {"schema": data.pop("schema"), **data}  # the version first, for a reader of the file

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: Path | str) -> Path:
        """Write to ``path`` (a metrics.json, or the run folder that gets one)."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / RECORD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    # ------------------------------------------------------------- reading helpers

    @property
    def test_metrics(self) -> dict[str, Number]:
        return self.test.metrics if self.test is not None else {}

    def test_groups(self) -> list[str]:
        """The group ids of the test part (empty for runs without one)."""
        return list((self.split.test.groups if self.split.test is not None else None) or [])

    @property
    def save_weights(self) -> bool:
        return bool((self.recipe or {}).get("save_weights", True))

    @property
    def cv_scope(self) -> str:
        return str(((self.recipe or {}).get("split") or {}).get("cv_scope", "all"))


def read_source_audit(weights_dir: Path) -> SourceAudit | None:
    path = Path(weights_dir) / "covid" / SOURCE_AUDIT_FILE
    return SourceAudit.read(path) if path.is_file() else None


def is_run_record(path: Path) -> bool:
    """Whether a metrics.json is a classification run's record (versioned, or a schema-1 one with a task).

    Other models keep their own records in the same file name (the lung-field segmentation
    model's ``scores``/``recipe``/``split``, see ``medmodels.train.segmentation``).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return True  # a broken file is reported by the reader, not skipped here
    return isinstance(data, dict) and ("schema" in data or "task" in data)


def record_paths(weights_dir: Path) -> list[Path]:
    """Every run record under ``weights_dir`` (model folders and nested metrics-only runs)."""
    weights_dir = Path(weights_dir)
    paths = sorted(weights_dir.glob(f"*/*/{RECORD_FILE}")) + sorted(weights_dir.glob(f"*/*/*/{RECORD_FILE}"))
    return [p for p in paths if is_run_record(p)]
