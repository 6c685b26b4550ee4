"""medmodels.train.losses against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import WeightedRandomSampler

from medmodels.errors import DatasetError
from medmodels.train.losses import (
    class_weights_reciprocal,
    distillation_loss,
    margin_loss,
    sample_weights_for_balance,
)

torch.set_num_threads(1)
LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75, softmax([ln 3, 0]) = [0.75, 0.25]


# --------------------------------------------------------------------------- margin loss


def test_margin_loss_two_samples_by_hand() -> None:
    logits = torch.tensor([[LN3, 0.0], [-LN3, -LN3]])
    targets = torch.tensor([0, 1])
    # lengths: sample 1 (0.75, 0.5) -> squared (0.5625, 0.25); sample 2 (0.25, 0.25) -> (0.0625, 0.0625)
    sample1 = (0.9 - 0.5625) + 0.5 * (0.25 - 0.1)  # target present / other class above m-
    sample2 = 0.5 * max(0.0, 0.0625 - 0.1) + (0.9 - 0.0625)  # other class below m- costs nothing
    assert margin_loss(logits, targets).item() == pytest.approx((sample1 + sample2) / 2)
    weighted = margin_loss(logits, targets, class_weights=torch.tensor([1.0, 3.0]))
    assert weighted.item() == pytest.approx((1.0 * sample1 + 3.0 * sample2) / 2)


def test_margin_loss_parameters_and_zero_when_confident() -> None:
    confident = torch.tensor([[12.0, -12.0, -12.0]])
    assert margin_loss(confident, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.tensor([[0.0, 0.0]])  # both squared lengths 0.25
    # lam scales only the absent-class term: (0.9 - 0.25) + lam * (0.25 - 0.1)
    assert margin_loss(logits, torch.tensor([0]), lam=1.0).item() == pytest.approx(0.65 + 0.15)
    assert margin_loss(logits, torch.tensor([0]), m_plus=0.2, m_minus=0.3).item() == pytest.approx(0.0)


def test_margin_loss_gradient_lowers_the_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 3, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss = margin_loss(logits, targets)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
    assert margin_loss(stepped, targets).item() < loss.item()


# --------------------------------------------------------------------------- distillation


def _kl(q: list[float], p: list[float]) -> float:
    """KL(q || p) = sum q log(q / p)."""
    return sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))


def test_distillation_loss_two_samples_by_hand() -> None:
    student = torch.tensor([[0.0, 0.0], [LN3, 0.0]])  # softmax (0.5, 0.5), (0.75, 0.25)
    teacher = torch.tensor([[LN3, 0.0], [0.0, 0.0]])  # softmax (0.75, 0.25), (0.5, 0.5)
    targets = torch.tensor([0, 1])
    kl = (_kl([0.75, 0.25], [0.5, 0.5]) + _kl([0.5, 0.5], [0.75, 0.25])) / 2  # KL(teacher || student), batch mean
    ce = (-math.log(0.5) - math.log(0.25)) / 2
    loss = distillation_loss(student, teacher, targets, temperature=1.0, alpha=0.5)
    assert loss.item() == pytest.approx(0.5 * kl + 0.5 * ce)
    # T = 2: logits halved before the softmax, KL multiplied by T^2 = 4; CE stays at T = 1
    r = math.sqrt(3.0)  # softmax([ln 3 / 2, 0]) = (sqrt3, 1) / (1 + sqrt3)
    soft = [r / (1 + r), 1 / (1 + r)]
    kl_t2 = (_kl(soft, [0.5, 0.5]) + _kl([0.5, 0.5], soft)) / 2
    loss_t2 = distillation_loss(student, teacher, targets, temperature=2.0, alpha=0.25)
    assert loss_t2.item() == pytest.approx(0.25 * 4 * kl_t2 + 0.75 * ce)


def test_distillation_reduces_to_cross_entropy() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    targets = torch.tensor([0, 1, 2, 2, 1, 0])
    loss = distillation_loss(student, teacher, targets, temperature=1.0, alpha=0.0)
    assert loss.item() == pytest.approx(F.cross_entropy(student, targets).item())
    weights = torch.tensor([1.0, 2.0, 0.5])
    weighted = distillation_loss(student, teacher, targets, temperature=3.0, alpha=0.0, class_weights=weights)
    assert weighted.item() == pytest.approx(F.cross_entropy(student, targets, weight=weights).item())


def test_distillation_term_vanishes_when_student_matches_teacher() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    loss = distillation_loss(logits, logits.clone(), torch.tensor([0, 2]), temperature=4.0, alpha=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_gradient_reaches_only_the_student() -> None:
    torch.manual_seed(0)
    teacher_net, student_net = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    x, targets = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    loss = distillation_loss(student_net(x), teacher_net(x), targets, temperature=2.0, alpha=0.7)
    loss.backward()
    assert all(p.grad is None for p in teacher_net.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student_net.parameters())


def test_distillation_refuses_bad_hyper_parameters() -> None:
    s, t, y = torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0])
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, t, y, temperature=0.0, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, t, y, temperature=1.0, alpha=1.5)


# --------------------------------------------------------------------------- class balancing


def test_class_weights_reciprocal_on_the_mortality_counts() -> None:
    # survival labels: 32 died, 125 survived (cxr SOURCE.md); w_c = (1 / n_c) * N / 2
    weights = class_weights_reciprocal([32, 125])
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([157 / 2 / 32, 157 / 2 / 125])
    assert (weights * torch.tensor([32.0, 125.0])).tolist() == pytest.approx([157 / 2, 157 / 2])


def test_class_weights_for_several_classes_equal_sklearn_balanced() -> None:
    counts = [10, 30, 60]
    labels = np.repeat(np.arange(3), counts)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert class_weights_reciprocal(counts).tolist() == pytest.approx(expected.tolist())
    assert class_weights_reciprocal([5, 5]).tolist() == pytest.approx([1.0, 1.0])


def test_class_weights_refuse_an_empty_class() -> None:
    with pytest.raises(DatasetError, match="class index 1"):
        class_weights_reciprocal([12, 0])


def test_sample_weights_for_balance() -> None:
    labels = [0, 0, 0, 1]
    weights = sample_weights_for_balance(labels)
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    assert sample_weights_for_balance(torch.tensor(labels)).tolist() == weights.tolist()
    # a sampler with these weights draws both classes about equally often
    generator = torch.Generator().manual_seed(0)
    drawn = list(WeightedRandomSampler(weights, num_samples=4000, replacement=True, generator=generator))
    share_of_minority = sum(1 for i in drawn if labels[i] == 1) / len(drawn)
    assert 0.45 < share_of_minority < 0.55
    with pytest.raises(DatasetError):
        sample_weights_for_balance([])
