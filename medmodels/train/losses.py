"""Loss functions and class-balancing weights of the papers.

- :func:`margin_loss`: QuadSNet's weighted margin loss (QuadSNet paper, eq. 2).
- :func:`distillation_loss`: Hinton-style knowledge distillation (KD paper, eq. 1).
- :func:`class_weights_reciprocal`: the mortality paper's class-weight adjustment.
- :func:`sample_weights_for_balance`: per-sample weights for ``WeightedRandomSampler``
  (the mortality paper's weighted random resampling).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medmodels.errors import DatasetError


def margin_loss(
    logits_or_lengths: Tensor,
    targets: Tensor,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    lam: float = 0.5,
    class_weights: Tensor | None = None,
) -> Tensor:
    """QuadSNet's margin loss, averaged over the batch.

    Per sample and class k (QuadSNet paper, eq. 2)::

        L_k = T_k * max(0, m+ - |v_k|^2) + lam * (1 - T_k) * max(0, |v_k|^2 - m-)

    with ``T_k = 1`` for the target class, summed over k. The paper computes it on
    capsule-style vector lengths ``|v_k|`` in [0, 1]; our models output logits, so we
    read ``|v_k| = sigmoid(logit_k)`` (a per-class length in [0, 1]) and apply the
    paper's squared term to it as written. The margins make the target class's squared
    length reach 0.9 and push the others below 0.1; ``lam`` down-weights absent classes.

    ``class_weights[c]`` (e.g. from :func:`class_weights_reciprocal`) weights each sample
    by the weight of its target class, for imbalance. The weighted losses are divided by
    the batch size N (a plain mean over the batch, unlike ``F.cross_entropy``'s division
    by the sum of weights); with reciprocal weights the mean weight is about 1, so the
    scale stays that of the unweighted loss.
    """
    if logits_or_lengths.ndim != 2:
        raise ValueError(f"margin_loss expects [N, C] logits, got shape {tuple(logits_or_lengths.shape)}.")
    lengths_squared = torch.sigmoid(logits_or_lengths).pow(2)
    present = F.one_hot(targets.long(), num_classes=logits_or_lengths.shape[1]).to(lengths_squared.dtype)
    per_class = present * torch.clamp(m_plus - lengths_squared, min=0.0) + lam * (1.0 - present) * torch.clamp(
        lengths_squared - m_minus, min=0.0
    )
    per_sample = per_class.sum(dim=1)
    if class_weights is not None:
        per_sample = per_sample * class_weights.to(per_sample)[targets.long()]
    return per_sample.mean()


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
    class_weights: Tensor | None = None,
) -> Tensor:
    """Knowledge-distillation loss: ``alpha * KL * T^2 + (1 - alpha) * CE(student, labels)``.

    KD paper, eq. 1, after Hinton et al. 2015. The KL term is
    ``F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean")``, which is
    ``KL(teacher_T || student_T) = sum_k q_k log(q_k / p_k)`` in the usual notation
    (q = teacher, p = student), the direction Hinton et al. use: the student is pulled
    toward the teacher's softened distribution. The paper writes ``KL(p, q)``; read it as
    this distillation term. ``T^2`` keeps the soft-target gradients at the scale of the
    hard-label gradients when T changes. The teacher logits are detached, so only the
    student receives gradients. ``class_weights`` weight the cross-entropy term only
    (``F.cross_entropy(weight=...)``, which divides by the sum of the weights); the
    soft targets already carry the teacher's view of every class.
    """
    if temperature <= 0:
        raise ValueError(f"The distillation temperature must be positive, got {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"The distillation alpha must be in [0, 1], got {alpha}.")
    soft_teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    log_soft_student = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_soft_student, soft_teacher, reduction="batchmean") * temperature**2
    weight = None if class_weights is None else class_weights.to(student_logits)
    ce = F.cross_entropy(student_logits, targets.long(), weight=weight)
    return alpha * kl + (1.0 - alpha) * ce


def class_weights_reciprocal(counts: Sequence[int]) -> Tensor:
    """Class weights ``w_c = N / (C * n_c)``: reciprocal class counts, rescaled.

    The mortality paper (section 3.8.1) takes the reciprocals of the class counts of the
    training set and multiplies them by half the number of cases, ``w_c = N / (2 n_c)``,
    so that the weights are of the order of 1 rather than tiny. For C classes we use
    ``N / (C * n_c)``, which is the same for two classes and equals scikit-learn's
    ``class_weight="balanced"``: every class then carries the same total weight N / C.
    """
    values = np.asarray(list(counts), dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("counts must be a non-empty sequence with one count per class.")
    missing = [int(i) for i in np.flatnonzero(values <= 0)]
    if missing:
        raise DatasetError(
            f"Class weights need at least one training sample of every class, but class index "
            f"{', '.join(map(str, missing))} has none in the training set."
        )
    weights = values.sum() / (values.size * values)
    return torch.tensor(weights, dtype=torch.float32)


def sample_weights_for_balance(labels: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    """One weight per sample, 1 / (count of its class), for ``WeightedRandomSampler``.

    Every class then has the same total weight, so the sampler draws the classes about
    equally often (the mortality paper's weighted random resampling).
    """
    if isinstance(labels, Tensor):
        values = labels.detach().cpu().numpy()
    else:
        values = np.asarray(labels)
    values = values.astype(np.int64).ravel()
    if values.size == 0:
        raise DatasetError("Cannot balance an empty training set: it has no labelled samples.")
    counts = np.bincount(values)
    return torch.as_tensor(1.0 / counts[values], dtype=torch.float64)
