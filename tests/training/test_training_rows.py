"""Which rows a run trains on: a row teaches through a gold label or (KD on) teacher logits; one with neither is
left out, so `--kd-alpha 0` is the no-teacher run and the epoch's schedule counts only rows that teach."""

import numpy as np

from training.loss import IGNORE
from training.trainer import EncodedSet, teaching_rows


def _set() -> EncodedSet:
    return EncodedSet(
        ids=[[101, i, 102] for i in range(5)],
        sentiment=np.array([0, IGNORE, IGNORE, IGNORE, 2]),
        topic=np.array([IGNORE, 7, IGNORE, IGNORE, IGNORE]),
        weight=np.ones(5, np.float32),
        sources=["phrasebank", "tweet_topic", "unlabeled:reuters", "unlabeled:reuters", "feedback"],
        teacher_sentiment=np.arange(15, dtype=np.float32).reshape(5, 3),
        teacher_topic=np.zeros((5, 20), np.float32),
        has_teacher=np.array([True, True, True, False, True]),
    )


def test_unlabeled_rows_are_left_out_when_kd_is_off():
    encoded = _set()
    assert teaching_rows(encoded, use_kd=False).tolist() == [0, 1, 4]
    kept = encoded.subset(teaching_rows(encoded, use_kd=False))
    assert kept.sources == ["phrasebank", "tweet_topic", "feedback"] and kept.ids == [[101, 0, 102], [101, 1, 102],
                                                                                       [101, 4, 102]]
    assert kept.sentiment.tolist() == [0, IGNORE, 2] and kept.teacher_sentiment[2].tolist() == [12, 13, 14]


def test_with_kd_an_unlabeled_row_stays_only_if_the_teacher_scored_it():
    encoded = _set()
    assert teaching_rows(encoded, use_kd=True).tolist() == [0, 1, 2, 4]  # row 3: unscored transfer text
    no_teacher = EncodedSet(ids=encoded.ids, sentiment=encoded.sentiment, topic=encoded.topic, weight=encoded.weight)
    assert teaching_rows(no_teacher, use_kd=True).tolist() == [0, 1, 4]
    assert encoded.subset(teaching_rows(encoded, use_kd=True)).has_teacher.tolist() == [True, True, True, True]
