"""medmodels.metrics against hand-computed cases, scikit-learn and the malaria paper's Table I."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medmodels.errors import DatasetError
from medmodels.metrics import (
    CurveData,
    compute_metrics,
    confusion_at_threshold,
    mean_curve,
    one_vs_rest,
    pr_curve_data,
    reliability_data,
    roc_curve_data,
)

pytestmark = pytest.mark.filterwarnings("error")  # no sklearn warning may leak to users

BINARY = ("negative", "positive")


def _probs_from_scores(scores: list[float] | np.ndarray, positive_index: int = 1) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    return np.stack([1 - s, s], axis=1) if positive_index == 1 else np.stack([s, 1 - s], axis=1)


def _plain_python(value: object) -> bool:
    """True when ``value`` holds only JSON-native Python types (no numpy scalars, no NaN)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_python(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain_python(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or type(value) in (int, str, bool)


# --------------------------------------------------------------------------- binary, by hand

# 3 positives, 4 negatives; scores sit mid-bin so that the ECE bins are unambiguous.
HAND_Y = [1, 1, 1, 0, 0, 0, 0]
HAND_S = [0.95, 0.85, 0.35, 0.65, 0.25, 0.15, 0.05]


def test_binary_metrics_match_hand_computation() -> None:
    report = compute_metrics(HAND_Y, _probs_from_scores(HAND_S), BINARY, positive_index=1)
    m = report.metrics
    # at 0.5: TP = {0.95, 0.85}, FN = {0.35}, FP = {0.65}, TN = {0.25, 0.15, 0.05}
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 3)
    assert m["n"] == 7
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["sensitivity"] == m["tpr"] == pytest.approx(2 / 3)
    assert m["specificity"] == m["tnr"] == pytest.approx(3 / 4)
    assert m["fpr"] == pytest.approx(1 / 4)
    assert m["fnr"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["mcc"] == pytest.approx((2 * 3 - 1 * 1) / math.sqrt(3 * 3 * 4 * 4))
    # ROC AUC = share of (positive, negative) pairs ranked right: 4 + 4 + 3 of 12
    assert m["roc_auc"] == pytest.approx(11 / 12)
    # AP: positives at ranks 1, 2, 4 -> precisions 1, 1, 3/4
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    # every score in its own bin: |outcome - score| summed / 7
    assert m["ece"] == pytest.approx((0.05 + 0.15 + 0.65 + 0.65 + 0.25 + 0.15 + 0.05) / 7)
    assert report.confusion_matrix == [[3, 1], [1, 2]]  # rows true, columns predicted
    assert report.threshold == 0.5
    assert report.notes == ()


def test_threshold_moves_the_decision() -> None:
    report = compute_metrics(HAND_Y, _probs_from_scores(HAND_S), BINARY, positive_index=1, threshold=0.3)
    m = report.metrics
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 0, 1, 3)
    assert report.threshold == 0.3
    # a score equal to the threshold is positive
    at_edge = compute_metrics([1], _probs_from_scores([0.35]), BINARY, positive_index=1, threshold=0.35)
    assert at_edge.metrics["tp"] == 1


def test_positive_class_at_index_zero() -> None:
    # malaria's positive class (Parasitized) is index 0: swap classes, columns and labels.
    swapped_y = [1 - y for y in HAND_Y]
    report = compute_metrics(swapped_y, _probs_from_scores(HAND_S, positive_index=0), ("positive", "negative"), 0)
    reference = compute_metrics(HAND_Y, _probs_from_scores(HAND_S), BINARY, 1)
    keys = ("tp", "tn", "fp", "fn", "sensitivity", "specificity", "precision", "f1", "mcc", "roc_auc", "pr_auc", "ece")
    for key in keys:
        assert report.metrics[key] == pytest.approx(reference.metrics[key]), key


def test_binary_agrees_with_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    s = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    m = compute_metrics(y, _probs_from_scores(s), BINARY, positive_index=1).metrics
    pred = (s >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s))


# --------------------------------------------------------------------------- the malaria paper, Table I

# (TP, TN, accuracy %, sensitivity %, specificity %, precision %, F1 %, MCC), Table I of
# 000_24ea91a3677a9efb.txt, rows "3 layered CNN" and "3 layered CNN (data augmentation)".
TABLE_I = [
    (2599, 2655, 95.32, 94.30, 96.34, 96.26, 95.27, 0.9066),
    (2569, 2706, 95.70, 93.21, 98.19, 98.09, 95.59, 0.9151),
]


@pytest.mark.parametrize("row", TABLE_I, ids=["3-layer", "3-layer+aug"])
def test_malaria_paper_equations_1_to_6(row: tuple) -> None:
    tp, tn, acc, sens, spec, prec, f1, mcc = row
    # FN and FP are not printed: recover them from sensitivity = TP/(TP+FN), specificity = TN/(TN+FP)
    fn = round(tp / (sens / 100) - tp)
    fp = round(tn / (spec / 100) - tn)
    assert tp + fn == tn + fp == 2756  # the balanced 20% test split of 27,558 cells
    # labels/scores that give exactly these counts; Parasitized (positive) is class 0 as in the task
    y = np.array([0] * (tp + fn) + [1] * (tn + fp))
    p_parasitized = np.array([0.9] * tp + [0.1] * fn + [0.2] * tn + [0.8] * fp)
    report = compute_metrics(y, _probs_from_scores(p_parasitized, 0), ("Parasitized", "Uninfected"), 0)
    m = report.metrics
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (tp, tn, fp, fn)
    assert round(100 * m["accuracy"], 2) == acc
    assert round(100 * m["sensitivity"], 2) == sens
    assert round(100 * m["specificity"], 2) == spec
    assert round(100 * m["precision"], 2) == prec
    assert round(100 * m["f1"], 2) == f1
    assert round(m["mcc"], 4) == mcc


# --------------------------------------------------------------------------- multi-class

MC_CLASSES = ("a", "b", "c")
MC_Y = [0, 1, 2, 2]
MC_P = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3]])  # argmax 0, 1, 2, 0


def test_multiclass_macro_metrics_by_hand() -> None:
    report = compute_metrics(MC_Y, MC_P, MC_CLASSES, positive_index=None)
    assert report.confusion_matrix == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    pc = report.per_class
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1, "specificity": 2 / 3})
    assert pc["b"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1, "specificity": 1.0})
    assert pc["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2, "specificity": 1.0})
    m = report.metrics
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["sensitivity"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["specificity"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert m["precision"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(MC_Y, MC_P, multi_class="ovr", average="macro"))
    expected_ap = np.mean([skm.average_precision_score(np.array(MC_Y) == k, MC_P[:, k]) for k in range(3)])
    assert m["pr_auc"] == pytest.approx(expected_ap)
    assert report.threshold is None
    assert "tp" not in m


def test_multiclass_agrees_with_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = p.argmax(axis=1)
    m = compute_metrics(y, p, ("w", "x", "y", "z"), None).metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_multiclass_with_an_absent_class_leaves_it_out_and_says_so() -> None:
    y = [0, 0, 2, 2]
    report = compute_metrics(y, MC_P, MC_CLASSES, None)
    assert report.per_class["b"]["recall"] is None
    assert report.per_class["b"]["support"] == 0
    aucs = [skm.roc_auc_score(np.array(y) == k, MC_P[:, k]) for k in (0, 2)]
    assert report.metrics["roc_auc"] == pytest.approx(np.mean(aucs))
    assert any("b" in note for note in report.notes)


# --------------------------------------------------------------------------- one class in y_true


def test_single_class_binary_gives_none_auc_and_a_note() -> None:
    report = compute_metrics([1, 1, 1], _probs_from_scores([0.9, 0.7, 0.2]), BINARY, positive_index=1)
    m = report.metrics
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["specificity"] is None and m["fpr"] is None  # no negatives to divide by
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert report.notes and "undefined" in report.notes[0]
    json.dumps(report.to_dict(), allow_nan=False)


def test_single_class_multiclass_gives_none_auc_and_a_note() -> None:
    report = compute_metrics([2, 2], MC_P[2:], MC_CLASSES, positive_index=None)
    assert report.metrics["roc_auc"] is None and report.metrics["pr_auc"] is None
    assert report.notes
    json.dumps(report.to_dict(), allow_nan=False)


def test_nothing_predicted_positive_gives_none_precision() -> None:
    report = compute_metrics([1, 0], _probs_from_scores([0.2, 0.1]), BINARY, positive_index=1)
    assert report.metrics["precision"] is None
    assert any("precision" in note for note in report.notes)


# --------------------------------------------------------------------------- report shape and errors


def test_to_dict_has_the_json_shape_and_plain_types() -> None:
    report = compute_metrics(HAND_Y, _probs_from_scores(HAND_S), BINARY, positive_index=1)
    data = report.to_dict()
    assert set(data) == {"n", "metrics", "per_class", "confusion_matrix", "classes", "threshold"}
    assert data["n"] == 7 and data["classes"] == list(BINARY)
    expected_metrics = {
        "accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "mcc",
        "tp", "tn", "fp", "fn", "tpr", "tnr", "fpr", "fnr", "roc_auc", "pr_auc", "ece", "n",
    }  # fmt: skip
    assert set(data["metrics"]) == expected_metrics
    assert _plain_python(data)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    multi = compute_metrics(MC_Y, MC_P, MC_CLASSES, None).to_dict()
    assert _plain_python(multi)
    assert set(multi["per_class"]["a"]) == {"precision", "recall", "f1", "support", "specificity"}


def test_report_is_frozen() -> None:
    report = compute_metrics(HAND_Y, _probs_from_scores(HAND_S), BINARY, positive_index=1)
    with pytest.raises(AttributeError):
        report.threshold = 0.1  # type: ignore[misc]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(DatasetError, match="empty"):
        compute_metrics([], np.zeros((0, 2)), BINARY, 1)
    with pytest.raises(ValueError):
        compute_metrics(MC_Y, MC_P, MC_CLASSES, positive_index=1)  # binary mode needs two classes
    with pytest.raises(ValueError):
        compute_metrics([0, 5], np.full((2, 2), 0.5), BINARY, 1)  # label outside the classes
    with pytest.raises(ValueError):
        compute_metrics([0, 1], np.full((3, 2), 0.5), BINARY, 1)  # row count mismatch


# --------------------------------------------------------------------------- calibration


def test_ece_is_zero_for_a_perfectly_calibrated_toy() -> None:
    # top-label: 4 samples at confidence 0.75 with 3 right, 20 at 0.95 with 19 right
    probs = np.array([[0.75, 0.25]] * 4 + [[0.95, 0.05]] * 20)
    y = np.array([0, 0, 0, 1] + [0] * 19 + [1])
    data = reliability_data(y, probs)
    assert data.kind == "top_label"
    assert data.ece == pytest.approx(0.0, abs=1e-12)
    assert sum(data.bin_count) == 24
    assert data.bin_count[7] == 4 and data.bin_count[9] == 20
    assert data.bin_accuracy[7] == pytest.approx(0.75) and data.bin_confidence[9] == pytest.approx(0.95)
    assert data.bin_accuracy[0] is None  # empty bin: a gap, not NaN
    # positive-class form: 4 samples at P = 0.25 of which 1 positive
    assert reliability_data([1, 0, 0, 0], [0.25] * 4).ece == pytest.approx(0.0, abs=1e-12)
    json.dumps(data.to_dict(), allow_nan=False)


def test_ece_of_an_over_confident_toy() -> None:
    # confidence 0.95 everywhere, right half the time: ECE = |0.5 - 0.95| = 0.45
    probs = np.array([[0.95, 0.05]] * 10 + [[0.05, 0.95]] * 10)
    y = np.array([0] * 5 + [1] * 5 + [1] * 5 + [0] * 5)
    assert reliability_data(y, probs).ece == pytest.approx(0.45)
    # two bins: 0.95 confidence right 50%, 0.65 confidence right 100% -> (10*0.45 + 10*0.35) / 20
    probs2 = np.vstack([probs[:10], np.array([[0.65, 0.35]] * 10)])
    y2 = np.array([0] * 5 + [1] * 5 + [0] * 10)
    assert reliability_data(y2, probs2, n_bins=10).ece == pytest.approx((10 * 0.45 + 10 * 0.35) / 20)


def test_probability_one_falls_in_the_last_bin() -> None:
    data = reliability_data([1, 1], [1.0, 1.0], n_bins=5)
    assert data.bin_count == [0, 0, 0, 0, 2]
    assert data.ece == pytest.approx(0.0)


# --------------------------------------------------------------------------- curves


def test_roc_curve_data_matches_sklearn_and_is_plain() -> None:
    curve = roc_curve_data(HAND_Y, HAND_S)
    assert curve.auc == pytest.approx(11 / 12)
    assert curve.x[0] == 0.0 and curve.y[0] == 0.0 and curve.x[-1] == 1.0 and curve.y[-1] == 1.0
    assert curve.x == sorted(curve.x)
    assert len(curve.x) == len(curve.y) == len(curve.thresholds)
    assert curve.thresholds[0] > max(HAND_S)  # nothing predicted positive at the first point
    assert all(math.isfinite(t) for t in curve.thresholds)
    assert _plain_python(curve.to_dict())
    # each point is the (FPR, TPR) at its own threshold
    for x, y, t in zip(curve.x, curve.y, curve.thresholds):
        counts = confusion_at_threshold(HAND_Y, HAND_S, t)
        assert (counts.fp / 4, counts.tp / 3) == pytest.approx((x, y))


def test_pr_curve_data_is_ordered_by_recall_and_reports_average_precision() -> None:
    curve = pr_curve_data(HAND_Y, HAND_S)
    assert curve.auc == pytest.approx(skm.average_precision_score(HAND_Y, HAND_S))
    assert (curve.x[0], curve.y[0]) == (0.0, 1.0)
    assert curve.x == sorted(curve.x) and curve.x[-1] == 1.0
    assert len(curve.x) == len(curve.y) == len(curve.thresholds)
    for recall, precision, t in zip(curve.x[1:], curve.y[1:], curve.thresholds[1:]):
        counts = confusion_at_threshold(HAND_Y, HAND_S, t)
        assert counts.sensitivity == pytest.approx(recall) and counts.precision == pytest.approx(precision)


def test_single_class_curves_are_empty_with_none_auc() -> None:
    for curve in (roc_curve_data([1, 1], [0.2, 0.9]), pr_curve_data([0, 0], [0.2, 0.9])):
        assert curve.auc is None and curve.x == [] and curve.notes


def test_one_vs_rest_helper() -> None:
    truth, scores = one_vs_rest(MC_Y, MC_P, 2)
    assert truth.tolist() == [0, 0, 1, 1]
    assert scores.tolist() == [0.1, 0.1, 0.8, 0.3]


def test_mean_curve_interpolates_on_a_common_grid() -> None:
    perfect = roc_curve_data([0, 1], [0.0, 1.0])  # (0,0) (0,1) (1,1), AUC 1
    chance = roc_curve_data([0, 1], [0.5, 0.5])  # (0,0) (1,1), AUC 0.5
    mean = mean_curve([perfect, chance])
    assert len(mean.x) == 101 and mean.x[50] == pytest.approx(0.5)
    assert mean.y[50] == pytest.approx((1.0 + 0.5) / 2)
    assert mean.y_std is not None and mean.y_std[50] == pytest.approx(0.25)
    assert mean.auc == pytest.approx(0.75) and mean.auc_std == pytest.approx(0.25)
    assert mean.thresholds == []
    same = mean_curve([chance, chance], grid=np.linspace(0, 1, 5))
    assert same.y == pytest.approx([0, 0.25, 0.5, 0.75, 1.0]) and same.y_std == pytest.approx([0.0] * 5)
    assert _plain_python(mean.to_dict())


def test_mean_curve_averages_pr_curves_and_skips_single_class_folds() -> None:
    folds = [pr_curve_data(HAND_Y, HAND_S), pr_curve_data([1, 1], [0.3, 0.4]), pr_curve_data([0, 1], [0.1, 0.9])]
    mean = mean_curve(folds)
    assert mean.auc == pytest.approx((skm.average_precision_score(HAND_Y, HAND_S) + 1.0) / 2)
    assert mean.notes and "1 of 3" in mean.notes[0]
    assert all(0.0 <= v <= 1.0 for v in mean.y)
    empty = mean_curve([CurveData(x=[], y=[], thresholds=[], auc=None)])
    assert empty.auc is None and empty.y == []


# --------------------------------------------------------------------------- live threshold


def test_confusion_at_threshold_counts_and_rates() -> None:
    counts = confusion_at_threshold(np.array(HAND_Y, dtype=bool), HAND_S, 0.5)
    assert (counts.tp, counts.tn, counts.fp, counts.fn) == (2, 3, 1, 1)
    assert counts.sensitivity == pytest.approx(2 / 3) and counts.specificity == pytest.approx(3 / 4)
    assert counts.accuracy == pytest.approx(5 / 7) and counts.precision == pytest.approx(2 / 3)
    data = counts.to_dict()
    assert _plain_python(data) and data["threshold"] == 0.5
    nothing = confusion_at_threshold(HAND_Y, HAND_S, 1.1)
    assert nothing.tp == 0 and nothing.fp == 0 and nothing.precision is None
    # agrees with compute_metrics at every threshold
    for t in (0.0, 0.2, 0.5, 0.9):
        m = compute_metrics(HAND_Y, _probs_from_scores(HAND_S), BINARY, 1, threshold=t).metrics
        c = confusion_at_threshold(HAND_Y, HAND_S, t)
        assert (c.tp, c.tn, c.fp, c.fn) == (m["tp"], m["tn"], m["fp"], m["fn"])


def test_prediction_agreement() -> None:
    from medmodels.metrics import prediction_agreement

    result = prediction_agreement([0, 1, 1, 0], [0, 1, 0, 0], num_classes=2)
    assert result.n == 4 and result.agreement == 0.75 and result.disagreeing == [2]
    # po = 0.75, pe = 0.5*0.75 + 0.5*0.25 = 0.5 -> kappa = 0.5
    assert abs(result.cohen_kappa - 0.5) < 1e-12
    assert prediction_agreement([1, 1], [1, 1], num_classes=2).cohen_kappa is None
