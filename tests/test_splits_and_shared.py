"""Grouped splits never put a patient on both sides; the shared-data readers follow SOURCE.md."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medmodels.data.shared import shared_data_root, shared_samples, slide_id, wbc_augmented_samples
from medmodels.data.splits import group_kfold, grouped_split, groups_of

needs_data = pytest.mark.skipif(shared_data_root() is None, reason="../shared/data is not present")


def _toy(n_groups: int = 40, seed: int = 0) -> tuple[list[int], list[str]]:
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(n_groups):
        size = int(rng.integers(1, 12)) if g else 60  # one huge group, like the malaria slide
        lab = int(rng.integers(0, 2))
        labels += [lab] * size
        groups += [f"p{g}"] * size
    return labels, groups


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.7, 0.2, 0.1)])
def test_grouped_split_is_disjoint_stratified_and_deterministic(fractions) -> None:
    labels, groups = _toy()
    parts = grouped_split(labels, groups, fractions, seed=3)
    assert sum(len(p) for p in parts) == len(labels)
    sets = [set(groups_of(p, groups)) for p in parts]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            assert not sets[i] & sets[j]
    for frac, part in zip(fractions, parts):
        assert abs(len(part) / len(labels) - frac) < 0.12
        assert len(set(np.asarray(labels)[part])) == 2  # both classes in every part
    again = grouped_split(labels, groups, fractions, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_group_kfold_covers_every_image_once() -> None:
    labels, groups = _toy()
    folds = group_kfold(labels, groups, k=5, seed=0)
    seen = Counter()
    for train, test in folds:
        assert not set(groups_of(train, groups)) & set(groups_of(test, groups))
        seen.update(test.tolist())
    assert set(seen) == set(range(len(labels))) and set(seen.values()) == {1}


def test_slide_id() -> None:
    assert slide_id("C102P63ThinF_IMG_20150918_161508_cell_190.png") == "C102P63ThinF"


@needs_data
def test_malaria_pool_matches_source_counts() -> None:
    data = shared_samples("malaria")
    counts = Counter(data.labels)
    assert (counts[0], counts[1]) == (1867, 1852)
    assert len(set(data.groups)) == 34  # 26 + 27 slides, 19 in both classes


@needs_data
def test_wbc_pool_is_one_crop_per_single_label_original() -> None:
    from medmodels.data.shared import wbc_smear_samples

    assert len(wbc_smear_samples()) == 348  # 351 single-label originals minus 3 basophils
    data = shared_samples("wbc")
    # SOURCE.md: 00096 and 00280 have no annotation; 6 files have no WBC box; 00113 has two.
    assert len(data) == 339 and len(set(data.groups)) == 339
    assert len(data.skipped) == 9 and all("WBC box" in s.reason for s in data.skipped)
    assert all(isinstance(s.source, bytes) for s in data.samples)
    assert len(wbc_augmented_samples()) == 2071


@needs_data
def test_wbc_cell_copies_keep_each_cells_copies_in_one_group() -> None:
    from medmodels.data.shared import wbc_cell_copies

    copies = wbc_cell_copies(copies=2)
    assert len(copies) == 2 * 339 and len(set(copies.groups)) == 339
    by_group = {}
    for s in copies.samples:
        by_group.setdefault(s.group, set()).add(s.label)
    assert all(len(labels) == 1 for labels in by_group.values())
    assert copies.samples[0].source != copies.samples[1].source  # two different augmentations


@needs_data
def test_xray_pools_drop_duplicates_and_keep_actualmed_apart() -> None:
    from medmodels.data.shared import covid_samples

    pool, external = covid_samples(), covid_samples(external=True)
    assert not {s.name for s in pool.samples} & {s.name for s in external.samples}
    assert Counter(external.labels) == Counter({0: 26, 1: 18})
    mortality = shared_samples("mortality")
    labelled = Counter(s.label for s in mortality.samples if s.label is not None)
    assert labelled == Counter({0: 124, 1: 32})  # SOURCE.md: Y 124, N 32 without duplicates
