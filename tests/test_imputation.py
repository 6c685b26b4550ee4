"""medmodels.train.imputation on small synthetic tables, and once on the real chest X-ray metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medmodels.errors import DatasetError
from medmodels.train.imputation import (
    ImputationResult,
    age_bins,
    impute_survival,
    impute_training_fold,
    survival_features,
    survival_labels,
)

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cxr" / "metadata.csv"


def _table(n_labelled: int = 40, n_missing: int = 10, seed: int = 0) -> pd.DataFrame:
    """Rows where death follows intubation exactly; the other columns are noise or missing."""
    rng = np.random.default_rng(seed)
    n = n_labelled + n_missing
    intubated = np.array(["Y", "N"] * (n // 2) + ["Y"] * (n % 2))
    survival = np.where(intubated == "Y", "N", "Y").astype(object)
    survival[n_labelled:] = None
    return pd.DataFrame(
        {
            "went_icu": rng.choice(["Y", "N", ""], size=n),
            "needed_supplemental_O2": rng.choice(["Y", "N", None], size=n),
            "intubation_present": intubated,
            "extubated": [None] * n,
            "age": rng.choice([25.0, 45.0, 65.0, np.nan], size=n),
            "survival": survival,
            "split_group": [f"p{i // 2}" for i in range(n)],  # two images per patient
        }
    )


def test_survival_features_encoding() -> None:
    rows = pd.DataFrame(
        {
            "went_icu": ["Y", "N", "", None, " y "],
            "needed_supplemental_O2": ["N", "N", "Y", np.nan, "n"],
            "intubation_present": ["Y", None, "", "N", "Y"],
            "extubated": [None, None, None, None, None],
            "age": [30, 31, 81, np.nan, "77"],
        }
    )
    features = survival_features(rows)
    assert features.shape == (5, 5) and features.dtype == np.int64
    assert features[:, 0].tolist() == [1, 0, -1, -1, 1]  # Y=1, N=0, empty/missing=-1, case and spaces ignored
    assert features[:, 1].tolist() == [0, 0, 1, -1, 0]
    assert features[:, 2].tolist() == [1, -1, -1, 0, 1]
    assert features[:, 3].tolist() == [-1] * 5
    assert features[:, 4].tolist() == [0, 1, 6, -1, 5]


def test_age_bins_follow_the_paper_groups() -> None:
    # 0-30, 31-40, 41-50, 51-60, 61-70, 71-80, 81-100 -> 0..6; over 100 joins the last group
    ages = pd.Series([0, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71, 80, 81, 100, 104, None, "unknown"])
    assert age_bins(ages).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 6, -1, -1]


def test_bad_metadata_is_refused_with_a_sentence() -> None:
    rows = _table(4, 0)
    with pytest.raises(DatasetError, match="went_icu"):
        survival_features(rows.assign(went_icu=["maybe", "Y", "N", "Y"]))
    with pytest.raises(DatasetError, match="extubated"):
        survival_features(rows.drop(columns=["extubated"]))
    with pytest.raises(DatasetError, match="survival"):
        survival_labels(rows.drop(columns=["survival"]))


def test_survival_labels_convention() -> None:
    rows = pd.DataFrame({"survival": ["Y", "N", "", None, "n"]})
    assert survival_labels(rows).tolist() == [0, 1, -1, -1, 1]  # survived=0, died=1, missing=-1


def test_impute_survival_learns_the_rule_and_fills_only_the_missing() -> None:
    df = _table()
    result = impute_survival(df, seed=0)
    assert isinstance(result, ImputationResult)
    assert (result.n_labelled, result.n_imputed) == (40, 10)
    assert result.imputed_mask.tolist() == [False] * 40 + [True] * 10
    assert result.cv_accuracy_mean == pytest.approx(1.0) and result.cv_accuracy_std == pytest.approx(0.0)
    expected = (df["intubation_present"] == "Y").astype(int).to_numpy()
    assert result.labels.tolist() == expected.tolist()
    assert isinstance(result.cv_accuracy_mean, float) and isinstance(result.n_imputed, int)


def test_real_labels_are_never_changed() -> None:
    df = _table()
    # flip five real labels so they contradict the rule the forest learns
    flipped = df.index[:5]
    df.loc[flipped, "survival"] = df.loc[flipped, "survival"].map({"Y": "N", "N": "Y"})
    result = impute_survival(df, seed=0)
    real = survival_labels(df)
    labelled = real != -1
    assert np.array_equal(result.labels[labelled], real[labelled])
    assert not result.imputed_mask[labelled].any()
    assert result.cv_accuracy_mean < 1.0  # the flipped rows are counted as errors in CV


def test_imputation_is_reproducible_with_a_seed() -> None:
    df = _table(seed=3)
    a, b = impute_survival(df, seed=7), impute_survival(df, seed=7)
    assert np.array_equal(a.labels, b.labels) and a.cv_accuracy_mean == b.cv_accuracy_mean


def test_grouped_cross_validation_runs_and_needs_enough_groups() -> None:
    df = _table()
    result = impute_survival(df, groups=df["split_group"], seed=0)
    assert 0.0 <= result.cv_accuracy_mean <= 1.0 and result.n_labelled == 40
    tiny = _table(12, 0)
    with pytest.raises(DatasetError, match="patient groups"):
        impute_survival(tiny, groups=["one-patient"] * 12)


def test_one_outcome_or_too_few_rows_is_refused() -> None:
    df = _table()
    with pytest.raises(DatasetError, match="both outcomes"):
        impute_survival(df.assign(survival=["Y"] * 40 + [None] * 10))
    with pytest.raises(DatasetError, match="at least 5"):
        impute_survival(_table(6, 2))


def test_training_fold_imputation_ignores_test_rows() -> None:
    df = _table(60, 20)
    train = np.arange(0, 70, dtype=int)  # the test fold is rows 70..79 (unlabelled) here
    test = np.arange(70, 80)
    df_changed_test = df.copy()
    df_changed_test.loc[test, ["went_icu", "survival"]] = ["Y", "N"]  # change test rows: labels and metadata
    a = impute_training_fold(df, train, groups=df["split_group"], seed=0)
    b = impute_training_fold(df_changed_test, train, groups=df["split_group"], seed=0)
    assert len(a.labels) == len(train)
    assert np.array_equal(a.labels, b.labels) and a.cv_accuracy_mean == b.cv_accuracy_mean
    real = survival_labels(df.iloc[train])
    assert np.array_equal(a.labels[real != -1], real[real != -1])


@pytest.mark.skipif(not METADATA.is_file(), reason=f"shared chest X-ray metadata not found at {METADATA}")
def test_imputation_on_the_real_metadata() -> None:
    df = pd.read_csv(METADATA)
    covid = df[(df["label_covid"] == 1) & (df["dataset"] == "ieee8023")].reset_index(drop=True)
    result = impute_survival(covid, groups=covid["split_group"], seed=0)
    real = survival_labels(covid)
    assert isinstance(result.cv_accuracy_mean, float) and 0.0 <= result.cv_accuracy_mean <= 1.0
    assert result.n_labelled == int((real != -1).sum()) == int(covid["survival"].isin(["Y", "N"]).sum())
    assert result.n_imputed == len(covid) - result.n_labelled
    assert np.array_equal(result.labels[real != -1], real[real != -1])
    assert set(np.unique(result.labels)) <= {0, 1}
