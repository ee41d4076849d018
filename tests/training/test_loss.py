"""Loss masking: a head gets no loss and no gradient from rows not labeled for it."""

import torch
from torch import nn

from training.loss import IGNORE, masked_multitask_loss
from training.trainer import collate, length_bucketed_batches


def test_unlabeled_rows_do_not_touch_a_head():
    torch.manual_seed(0)
    s_logits = torch.randn(4, 3, requires_grad=True)
    t_logits = torch.randn(4, 20, requires_grad=True)
    sentiment = torch.tensor([0, 2, IGNORE, IGNORE])
    topic = torch.tensor([IGNORE, IGNORE, 5, 19])
    loss = masked_multitask_loss(s_logits, t_logits, sentiment, topic, torch.ones(4))
    loss.backward()
    assert torch.all(s_logits.grad[2:] == 0) and torch.any(s_logits.grad[:2] != 0)
    assert torch.all(t_logits.grad[:2] == 0) and torch.any(t_logits.grad[2:] != 0)
    expected = nn.functional.cross_entropy(s_logits[:2], sentiment[:2]) + nn.functional.cross_entropy(t_logits[2:], topic[2:])
    assert torch.isclose(loss, expected)


def test_batch_without_topic_labels_has_sentiment_loss_only():
    s_logits, t_logits = torch.randn(2, 3), torch.randn(2, 20)
    sentiment = torch.tensor([1, 2])
    loss = masked_multitask_loss(s_logits, t_logits, sentiment, torch.tensor([IGNORE, IGNORE]), torch.ones(2))
    assert torch.isclose(loss, nn.functional.cross_entropy(s_logits, sentiment))


def test_weights_scale_rows():
    s_logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    sentiment = torch.tensor([0, 0])  # row 0 right, row 1 wrong
    none = torch.tensor([IGNORE, IGNORE])
    even = masked_multitask_loss(s_logits, torch.zeros(2, 20), sentiment, none, torch.tensor([1.0, 1.0]))
    heavy_wrong = masked_multitask_loss(s_logits, torch.zeros(2, 20), sentiment, none, torch.tensor([1.0, 3.0]))
    assert heavy_wrong > even


def test_bucketed_batches_cover_every_row_once_and_pad_to_longest():
    import random

    lengths = [random.Random(i).randint(3, 60) for i in range(500)]
    batches = length_bucketed_batches(lengths, 16, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(500))
    ids, mask = collate([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_a_batch_with_no_gold_label_and_no_teacher_backpropagates_a_zero():
    """`--unlabeled N --kd-alpha 0`, or a soft-label file missing some transfer texts, once gave batches of rows with
    neither: backward() raised "element 0 of tensors does not require grad"."""
    import numpy as np

    from training.loss import distillation_loss, student_loss

    s = torch.randn(3, 3, requires_grad=True)
    t = torch.randn(3, 20, requires_grad=True)
    none = torch.full((3,), IGNORE)
    labels = {"sentiment": none, "topic": none}
    for kwargs in ({}, {"teacher": {"sentiment": torch.randn(3, 3), "topic": torch.randn(3, 20)},
                        "has_teacher": torch.zeros(3, dtype=torch.bool), "alpha": 0.5},
                   {"teacher": {"sentiment": torch.randn(3, 3), "topic": torch.randn(3, 20)},
                    "has_teacher": torch.ones(3, dtype=torch.bool), "alpha": 0.0}):
        s.grad = t.grad = None
        loss = student_loss({"sentiment": s, "topic": t}, labels, torch.ones(3), **kwargs)
        assert float(loss) == 0.0 and loss.requires_grad
        loss.backward()
        assert np.all(s.grad.numpy() == 0) and np.all(t.grad.numpy() == 0)
    zero = distillation_loss(s, torch.randn(3, 3), torch.zeros(3, dtype=torch.bool), 2.0)
    assert float(zero) == 0.0 and zero.requires_grad


def test_a_labeled_batch_loses_nothing_to_the_zero():
    s, t = torch.randn(2, 3), torch.randn(2, 20)
    sentiment = torch.tensor([1, 2])
    loss = masked_multitask_loss(s, t, sentiment, torch.tensor([IGNORE, IGNORE]), torch.ones(2))
    assert torch.equal(loss, nn.functional.cross_entropy(s, sentiment))  # exactly, not just close
