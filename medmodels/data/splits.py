"""Patient/slide-level splits: no group ever appears on both sides.

Images of one patient (or slide, or original cell) share appearance; a random image split
leaks that appearance into the test set. Every split here works on groups, stratified on
the group's majority label, and is deterministic for a seed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def _group_ids(labels: Sequence[int], groups: Sequence[str | None]) -> np.ndarray:
    """Images without a group become their own group."""
    return np.asarray([g if g is not None else f"__image_{i}" for i, g in enumerate(groups)])


def group_kfold(
    labels: Sequence[int], groups: Sequence[str | None], k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified grouped k-fold: ``k`` (train_idx, test_idx) pairs, each group in one test fold."""
    y = np.asarray(labels)
    g = _group_ids(labels, groups)
    n_groups = len(set(g))
    if n_groups < k:
        raise ValueError(f"{k}-fold split needs at least {k} groups, got {n_groups}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, g)]


def grouped_split(
    labels: Sequence[int],
    groups: Sequence[str | None],
    fractions: Sequence[float],
    seed: int = 0,
) -> list[np.ndarray]:
    """Split indices into parts of roughly ``fractions`` of the images, by group.

    Greedy and deterministic: groups are shuffled with ``seed``, then each group goes to the
    part whose per-class quota is most under-filled, which keeps parts stratified even when
    a few groups are very large (one malaria slide holds a third of the parasitized cells).
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    y = np.asarray(labels)
    g = _group_ids(labels, groups)
    classes = sorted(set(y.tolist()))
    members: dict[str, list[int]] = {}
    for i, gid in enumerate(g):
        members.setdefault(gid, []).append(i)
    order = sorted(members)
    np.random.default_rng(seed).shuffle(order)
    # Place big groups first so the small ones can even out the quotas.
    order.sort(key=lambda gid: -len(members[gid]))
    totals = Counter(y.tolist())
    filled = [Counter() for _ in fractions]
    parts: list[list[int]] = [[] for _ in fractions]
    for gid in order:
        idx = members[gid]
        counts = Counter(y[idx].tolist())

        def deficit(p: int) -> float:
            # How far part p is below its quota, over the classes this group brings.
            return sum(
                (fractions[p] * totals[c] - filled[p][c]) / max(totals[c], 1) * counts[c]
                for c in classes
            )

        best = max(range(len(fractions)), key=deficit)
        parts[best].extend(idx)
        filled[best].update(counts)
    return [np.asarray(sorted(p), dtype=int) for p in parts]


def groups_of(indices: np.ndarray, groups: Sequence[str | None]) -> list[str]:
    """The sorted distinct group ids of ``indices`` (written into metrics.json)."""
    return sorted({str(groups[i]) for i in indices if groups[i] is not None})
