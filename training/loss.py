"""Training losses: masked multi-task cross-entropy with per-head weights, and knowledge distillation.

A row labeled for one task adds nothing to the other head's loss (label == IGNORE). Distillation adds,
for every row that has a teacher distribution, the temperature-softened KL divergence to the teacher
(Hinton et al. 2015, scaled by T^2 so its gradient does not shrink with T).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from models.labels import HEADS

IGNORE = -100


def masked_multitask_loss(
    sentiment_logits: torch.Tensor,
    topic_logits: torch.Tensor,
    sentiment: torch.Tensor,
    topic: torch.Tensor,
    weight: torch.Tensor,
    label_smoothing: float = 0.0,
    head_weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Sum over heads of ``head_weight`` x the weighted mean cross-entropy over the rows labeled for that head.

    Rows without a label for a head (label == IGNORE) add nothing to that head's loss or its gradient.
    """
    head_weights = head_weights or {}
    total: torch.Tensor | None = None
    for head, logits, labels in (("sentiment", sentiment_logits, sentiment), ("topic", topic_logits, topic)):
        mask = labels != IGNORE
        if not bool(mask.any()):
            continue
        losses = nn.functional.cross_entropy(
            logits[mask].float(), labels[mask], reduction="none", label_smoothing=label_smoothing
        )
        w = weight[mask]
        term = float(head_weights.get(head, 1.0)) * (losses * w).sum() / w.sum().clamp(min=1e-8)
        total = term if total is None else total + term
    if total is None:  # no row labeled for either head: a zero that still backpropagates (zero gradients)
        return graph_zero(sentiment_logits, topic_logits)
    return total


def graph_zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A float32 scalar 0 attached to the graph of ``tensors``: ``backward()`` on it gives zero gradients instead
    of raising "element 0 of tensors does not require grad" (a batch with nothing to learn from)."""
    return sum(t.float().sum() * 0.0 for t in tensors)  # type: ignore[return-value]


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, has_teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over rows with a teacher of T^2 * KL(softmax(teacher/T) || softmax(student/T)); 0 if none."""
    if not bool(has_teacher.any()):
        return graph_zero(student_logits)
    t = float(temperature)
    student = nn.functional.log_softmax(student_logits[has_teacher].float() / t, dim=-1)
    teacher = nn.functional.log_softmax(teacher_logits[has_teacher].float() / t, dim=-1)
    kl = nn.functional.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)
    return kl.mean() * t * t


def student_loss(
    logits: Mapping[str, torch.Tensor],
    labels: Mapping[str, torch.Tensor],
    weight: torch.Tensor,
    *,
    teacher: Mapping[str, torch.Tensor] | None = None,
    has_teacher: torch.Tensor | None = None,
    alpha: float = 0.0,
    temperature: float = 2.0,
    label_smoothing: float = 0.0,
    head_weights: Mapping[str, float] | None = None,
    kd_heads: tuple[str, ...] = HEADS,
    kd_unlabeled_only: tuple[str, ...] = (),
) -> torch.Tensor:
    """(1 - alpha) x gold masked CE + alpha x KD on ``kd_heads`` (alpha = 0 or no teacher: plain gold CE).

    A batch with no gold label and no teacher row gives a zero loss still attached to the logits' graph, so
    ``backward()`` runs (zero gradients) instead of raising.

    For a head in ``kd_unlabeled_only`` the KD term skips rows that carry a gold label for that head: a teacher
    that is weak on rare classes then cannot pull against the gold labels, and teaches only where none exists.
    """
    gold = masked_multitask_loss(logits["sentiment"], logits["topic"], labels["sentiment"], labels["topic"], weight,
                                 label_smoothing, head_weights)
    if teacher is None or has_teacher is None or alpha == 0:
        return gold
    head_weights = head_weights or {}
    kd = sum(float(head_weights.get(h, 1.0))
             * distillation_loss(logits[h], teacher[h],
                                 has_teacher & (labels[h] == IGNORE) if h in kd_unlabeled_only else has_teacher,
                                 temperature)
             for h in kd_heads)
    return (1 - alpha) * gold + alpha * kd
