"""Imputing missing COVID-19 survival labels from metadata with a random forest.

The mortality paper (section 3.7) trains a random forest on the rows that have a
``survival`` label, using ``went_icu``, ``needed_supplemental_O2``,
``intubation_present``, ``extubated`` and the age binned into 0-30, 31-40, 41-50,
51-60, 61-70, 71-80, 81-100; it reports 5-fold cross-validated accuracy (~92.5%) and
then predicts the missing labels.

Imputed labels are for training only: a test fold is scored on real labels. Callers
therefore impute per fold with :func:`impute_training_fold`, which fits the forest on
the training rows alone, so neither the labels nor the metadata of test rows shape
the labels the model trains on. Rows that have a real label are never changed.

Label convention (the mortality task's classes are ``("survived", "died")``):
survival ``Y`` -> 0, ``N`` -> 1, missing -> -1 (in :func:`survival_labels`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score

from medmodels.errors import DatasetError

logger = logging.getLogger(__name__)

FEATURE_COLUMNS: tuple[str, ...] = ("went_icu", "needed_supplemental_O2", "intubation_present", "extubated")
AGE_COLUMN = "age"
# Upper bounds (inclusive) of the paper's age groups; older than 80 is the last group.
AGE_BIN_UPPER: tuple[int, ...] = (30, 40, 50, 60, 70, 80)
MISSING = -1
SURVIVED, DIED = 0, 1


@dataclass(frozen=True)
class ImputationResult:
    """Labels with the missing ones imputed, and how well the forest did in cross-validation.

    ``labels[i]`` is the real label where ``imputed_mask[i]`` is False, the forest's
    prediction where it is True. ``cv_accuracy_*`` is over the labelled rows only.
    """

    labels: np.ndarray
    imputed_mask: np.ndarray
    cv_accuracy_mean: float
    cv_accuracy_std: float
    n_labelled: int
    n_imputed: int


def _yes_no(column: pd.Series, name: str) -> np.ndarray:
    """Y -> 1, N -> 0, empty or missing -> -1; anything else is a data error."""
    text = column.astype("string").str.strip().str.upper().fillna("").to_numpy(dtype=object)
    unknown = sorted({str(v) for v in text if v not in ("Y", "N", "")})
    if unknown:
        raise DatasetError(f"Column {name!r} must hold Y, N or nothing, but it holds {unknown[:5]}.")
    return np.select([text == "Y", text == "N"], [1, 0], default=MISSING).astype(np.int64)


def age_bins(age: pd.Series) -> np.ndarray:
    """The paper's age groups as ordinals 0..6 (0-30 ... 81-100); missing -> -1.

    Ages over 100 fall into the last group; an age that is not a number is missing.
    """
    years = pd.to_numeric(age, errors="coerce").to_numpy(dtype=np.float64)
    bins = np.searchsorted(np.asarray(AGE_BIN_UPPER, dtype=np.float64), years, side="left")
    return np.where(np.isnan(years), MISSING, bins).astype(np.int64)


def survival_features(rows: pd.DataFrame) -> np.ndarray:
    """Forest features ``[N, 5]``: the four Y/N columns (Y=1, N=0, missing=-1) and the age group.

    Missing values get their own code (-1) rather than a guess: most rows miss some of
    these columns, and "not recorded" may itself carry information; trees split on it.
    """
    absent = [c for c in (*FEATURE_COLUMNS, AGE_COLUMN) if c not in rows.columns]
    if absent:
        raise DatasetError(f"The metadata lacks the column(s) {', '.join(absent)} needed to impute survival.")
    columns = [_yes_no(rows[c], c) for c in FEATURE_COLUMNS]
    columns.append(age_bins(rows[AGE_COLUMN]))
    return np.stack(columns, axis=1)


def survival_labels(rows: pd.DataFrame, label_col: str = "survival") -> np.ndarray:
    """Real mortality labels: survival Y -> 0 (survived), N -> 1 (died), missing -> -1."""
    if label_col not in rows.columns:
        raise DatasetError(f"The metadata has no {label_col!r} column to impute.")
    flags = _yes_no(rows[label_col], label_col)
    return np.select([flags == 1, flags == 0], [SURVIVED, DIED], default=MISSING).astype(np.int64)


def _cv_splitter(
    y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int
) -> StratifiedKFold | StratifiedGroupKFold:
    smallest = int(np.bincount(y).min()) if np.unique(y).size == 2 else 0
    if smallest == 0:
        raise DatasetError("Imputing survival needs labelled rows of both outcomes (survived and died).")
    if groups is not None:
        n_groups = min(np.unique(groups[y == k]).size for k in (SURVIVED, DIED))
        if n_groups < folds:
            raise DatasetError(
                f"Imputing survival with {folds}-fold cross-validation needs at least {folds} patient "
                f"groups of each outcome among the labelled rows, but one outcome has only {n_groups}."
            )
        return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    if smallest < folds:
        raise DatasetError(
            f"Imputing survival with {folds}-fold cross-validation needs at least {folds} labelled rows "
            f"of each outcome, but one outcome has only {smallest}."
        )
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def impute_survival(
    df: pd.DataFrame,
    label_col: str = "survival",
    groups: Sequence[str] | np.ndarray | pd.Series | None = None,
    seed: int = 0,
    folds: int = 5,
) -> ImputationResult:
    """Fit a random forest on the labelled rows of ``df`` and predict the unlabelled ones.

    Reports the forest's stratified ``folds``-fold accuracy on the labelled rows; pass
    ``groups`` (e.g. ``df["split_group"]``) so that a patient's images stay in one fold.
    Rows with a real label keep it. Pass only training rows (see
    :func:`impute_training_fold`): imputed labels must never be scored.
    """
    features = survival_features(df)
    real = survival_labels(df, label_col)
    labelled = real != MISSING
    group_ids = None if groups is None else np.asarray(groups).astype(str)
    if group_ids is not None and group_ids.shape[0] != len(df):
        raise ValueError(f"groups has {group_ids.shape[0]} entries but the table has {len(df)} rows.")
    x, y = features[labelled], real[labelled]
    splitter = _cv_splitter(y, None if group_ids is None else group_ids[labelled], folds, seed)

    forest = RandomForestClassifier(random_state=seed, n_jobs=1)
    scores = cross_val_score(
        forest, x, y, cv=splitter, groups=None if group_ids is None else group_ids[labelled], scoring="accuracy"
    )
    forest.fit(x, y)

    labels = real.copy()
    missing = ~labelled
    if missing.any():
        labels[missing] = forest.predict(features[missing])
    logger.info(
        "Survival imputation: %d labelled rows, %d imputed, %d-fold CV accuracy %.3f +/- %.3f",
        int(labelled.sum()), int(missing.sum()), folds, scores.mean(), scores.std(),
    )
    return ImputationResult(
        labels=labels,
        imputed_mask=missing,
        cv_accuracy_mean=float(scores.mean()),
        cv_accuracy_std=float(scores.std()),
        n_labelled=int(labelled.sum()),
        n_imputed=int(missing.sum()),
    )


def impute_training_fold(
    df: pd.DataFrame,
    train_index: Sequence[int] | np.ndarray,
    label_col: str = "survival",
    groups: Sequence[str] | np.ndarray | pd.Series | None = None,
    seed: int = 0,
    folds: int = 5,
) -> ImputationResult:
    """Impute labels for the training rows of one fold, fitting on those rows only.

    ``train_index`` are positions in ``df``; the result is aligned with them. Test rows
    are left out entirely: score them with :func:`survival_labels`, on the rows whose
    label is real (not -1).
    """
    positions = np.asarray(train_index, dtype=np.int64)
    train = df.iloc[positions].reset_index(drop=True)
    train_groups = None if groups is None else np.asarray(groups)[positions]
    return impute_survival(train, label_col=label_col, groups=train_groups, seed=seed, folds=folds)
