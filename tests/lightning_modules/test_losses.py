"""Losses against values computed by hand with plain ``math``, plus their limiting cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bertlab.core.errors import BertlabError
from lightning_modules.losses import kd_loss, label_description_contrastive

STUDENT = [[1.0, 2.0, 0.5], [0.2, -1.0, 0.3]]
TEACHER = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
LABELS = [1, 2]


def softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def hand_kd(student, teacher, labels, t, alpha):
    kl = ce = 0.0
    for z, p, y in zip(student, teacher, labels):
        q_t = [x ** (1 / t) for x in p]
        q_t = [x / sum(q_t) for x in q_t]
        q_s = softmax([x / t for x in z])
        kl += sum(a * math.log(a / b) for a, b in zip(q_t, q_s))
        ce -= math.log(softmax(z)[y])
    n = len(labels)
    return alpha * t * t * kl / n + (1 - alpha) * ce / n


def kd(t, alpha, student=STUDENT, teacher=TEACHER, labels=LABELS):
    return kd_loss(
        torch.tensor(student, dtype=torch.float64),
        torch.tensor(teacher, dtype=torch.float64),
        torch.tensor(labels),
        t,
        alpha,
    )


def test_kd_equals_hand_computation():
    assert hand_kd(STUDENT, TEACHER, LABELS, 2.0, 0.6) == pytest.approx(0.5127871600401968, abs=1e-15)
    for t, alpha in [(2.0, 0.6), (1.0, 0.5), (4.0, 1.0), (0.5, 0.3)]:
        assert kd(t, alpha).item() == pytest.approx(hand_kd(STUDENT, TEACHER, LABELS, t, alpha), rel=1e-12)


def test_kd_alpha_zero_is_cross_entropy_exactly():
    logits = torch.tensor(STUDENT)
    ce = F.cross_entropy(logits, torch.tensor(LABELS))
    assert torch.equal(kd_loss(logits, torch.tensor(TEACHER), torch.tensor(LABELS), 3.0, 0.0), ce)
    assert torch.equal(kd_loss(logits, torch.tensor(TEACHER), torch.tensor(LABELS), 3.0, 0), ce)


def test_kd_alpha_one_ignores_labels():
    assert kd(2.0, 1.0, labels=[0, 0]).item() == kd(2.0, 1.0, labels=[2, 1]).item()


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 5.0])
def test_tempering_probabilities_equals_tempering_teacher_logits(t):
    """softmax(log p / T) with p = softmax(z_t) is softmax(z_t / T): a dump's probabilities suffice."""
    g = torch.Generator().manual_seed(0)
    z_s, z_t = (
        torch.randn(4, 5, generator=g, dtype=torch.float64),
        3 * torch.randn(4, 5, generator=g, dtype=torch.float64),
    )
    labels = torch.tensor([0, 1, 2, 3])
    direct = t**2 * F.kl_div(
        F.log_softmax(z_s / t, -1), F.log_softmax(z_t / t, -1), reduction="batchmean", log_target=True
    )
    torch.testing.assert_close(kd_loss(z_s, z_t.softmax(-1), labels, t, 1.0), direct, rtol=1e-12, atol=1e-12)
    assert kd_loss(z_t, z_t.softmax(-1), labels, t, 1.0).abs().item() < 1e-12  # student = teacher: no soft loss


def test_kd_gradient_and_its_t_squared_scaling():
    """d/dz_s [T² KL] = T (q_s − q_t) / B exactly, → (z_s − z_t − mean) / (C·B) as T grows (Hinton §2.1)."""
    g = torch.Generator().manual_seed(1)
    z_t = torch.randn(2, 3, generator=g, dtype=torch.float64)
    base = torch.randn(2, 3, generator=g, dtype=torch.float64)
    for t in (1.0, 3.0, 200.0):
        z_s = base.clone().requires_grad_()
        kd_loss(z_s, z_t.softmax(-1), torch.tensor(LABELS), t, 1.0).backward()
        exact = t * ((base / t).softmax(-1) - (z_t / t).softmax(-1)) / 2
        torch.testing.assert_close(z_s.grad, exact, rtol=1e-9, atol=1e-12)
    diff = base - z_t
    high_t_limit = (diff - diff.mean(-1, keepdim=True)) / (3 * 2)
    torch.testing.assert_close(z_s.grad, high_t_limit, rtol=0, atol=5e-3)  # magnitude kept, not 1/T² smaller


def test_kd_handles_zero_teacher_probabilities():
    student = torch.tensor(STUDENT, requires_grad=True)
    loss = kd_loss(student, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor(LABELS), 2.0, 0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_kd_half_precision_logits_stay_finite():
    loss = kd_loss(
        torch.tensor(STUDENT, dtype=torch.bfloat16),
        torch.tensor([[1.0, 0.0, 0.0], [0.1, 0.3, 0.6]]),
        torch.tensor(LABELS),
        2.0,
        0.5,
    )
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "t,alpha,match",
    [
        (0.0, 0.5, "temperature"),
        (-1.0, 0.5, "temperature"),
        (float("nan"), 0.5, "temperature"),
        (float("inf"), 0.5, "temperature"),
        (2.0, -0.1, "alpha"),
        (2.0, 1.5, "alpha"),
        (2.0, float("nan"), "alpha"),
    ],
)
def test_kd_rejects_bad_temperature_and_alpha(t, alpha, match):
    with pytest.raises(BertlabError, match=match):
        kd(t, alpha)


# label descriptions e_0, e_1; samples x_0 (label 0), x_1 (label 1), x_2 (label 0)
LABEL_EMB = [[1.0, 0.0], [0.0, 2.0]]
SAMPLES = [[3.0, 4.0], [1.0, 1.0], [-1.0, 2.0]]
SAMPLE_LABELS = [0, 1, 0]


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.hypot(*a) / math.hypot(*b)


def hand_contrastive(tau, sample_negatives, samples=SAMPLES, labels=SAMPLE_LABELS):
    total = 0.0
    for x, y in zip(samples, labels):
        terms = [math.exp(cos(x, e) / tau) for e in LABEL_EMB]
        if sample_negatives:
            terms += [math.exp(cos(x, other) / tau) for other, y_other in zip(samples, labels) if y_other != y]
        total += -cos(x, LABEL_EMB[y]) / tau + math.log(sum(terms))
    return total / len(samples)


def contrastive(tau=0.5, **kwargs):
    return label_description_contrastive(
        torch.tensor(SAMPLES, dtype=torch.float64),
        torch.tensor(LABEL_EMB, dtype=torch.float64),
        torch.tensor(SAMPLE_LABELS),
        tau,
        **kwargs,
    )


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("sample_negatives", [False, True])
def test_contrastive_equals_hand_computation(tau, sample_negatives):
    assert contrastive(tau, sample_negatives=sample_negatives).item() == pytest.approx(
        hand_contrastive(tau, sample_negatives), rel=1e-12
    )


def test_contrastive_pinned_value():
    # x_0=(.6,.8): cos 0.6 / 0.8; x_1: cos 1/√2 both; x_2=(-1,2)/√5: cos −1/√5 / 2/√5; τ=0.5
    expected = (
        math.log(math.exp(1.2) + math.exp(1.6))
        - 1.2
        + math.log(2)
        + math.log(math.exp(-2 / 5**0.5) + math.exp(4 / 5**0.5))
        + 2 / 5**0.5
    ) / 3
    assert contrastive(0.5).item() == pytest.approx(expected, rel=1e-12)


def test_sample_negatives_skip_self_and_same_label():
    """A batch of one label has no sample negatives; a duplicate of x_0 is not a negative for x_0."""
    same = torch.tensor([SAMPLES[0], SAMPLES[2], SAMPLES[0]])
    args = (torch.tensor(LABEL_EMB), torch.tensor([0, 0, 0]), 0.5)
    assert (
        label_description_contrastive(same, *args, sample_negatives=True).item()
        == label_description_contrastive(same, *args).item()
    )
    doubled = [SAMPLES[0], SAMPLES[0], SAMPLES[1]]
    got = label_description_contrastive(
        torch.tensor(doubled, dtype=torch.float64),
        torch.tensor(LABEL_EMB, dtype=torch.float64),
        torch.tensor([0, 0, 1]),
        0.5,
        sample_negatives=True,
    )
    assert got.item() == pytest.approx(hand_contrastive(0.5, True, doubled, [0, 0, 1]), rel=1e-12)


@pytest.mark.parametrize("sample_negatives", [False, True])
def test_contrastive_lower_when_samples_align_with_their_label(sample_negatives):
    g = torch.Generator().manual_seed(0)
    label_emb = torch.randn(4, 16, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    noise = 0.1 * torch.randn(8, 16, generator=g)
    aligned = label_description_contrastive(
        label_emb[labels] + noise, label_emb, labels, 0.1, sample_negatives=sample_negatives
    )
    wrong = label_description_contrastive(
        label_emb[(labels + 1) % 4] + noise, label_emb, labels, 0.1, sample_negatives=sample_negatives
    )
    assert aligned.item() < 0.1 < wrong.item()


def test_contrastive_gradient_reaches_samples_and_descriptions():
    samples, descriptions = torch.tensor(SAMPLES, requires_grad=True), torch.tensor(LABEL_EMB, requires_grad=True)
    label_description_contrastive(
        samples, descriptions, torch.tensor(SAMPLE_LABELS), 0.1, sample_negatives=True
    ).backward()
    for grad in (samples.grad, descriptions.grad):
        assert torch.isfinite(grad).all() and (grad.abs().sum(-1) > 0).all()


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan")])
def test_contrastive_rejects_bad_temperature(tau):
    with pytest.raises(BertlabError, match="contrastive temperature"):
        contrastive(tau)
