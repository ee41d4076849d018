"""Pure batch rules: de-duplication, per-text engine refusals, dead-letter and news.scored formats."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone

from models.prediction import InvalidTextError, Prediction
from streams.messages import ScoredEvent
from streams.processing import (
    RawRecord,
    classify_accepted,
    db_item,
    deadletter_record,
    describe_deadletter,
    scored_event,
    validate_batch,
)


class RefusesWordClassifier:
    """Test double of the Classifier contract: refuses texts containing 'BAD', else a fixed verdict."""

    model_version = "double-1"

    def __init__(self) -> None:
        self.calls = 0

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls += 1
        for i, t in enumerate(texts):
            if "BAD" in t:
                raise InvalidTextError(i, "refused by test double")
        return [Prediction("Markets", 0.9, "negative", 0.7, 0.2, 0.1, self.model_version) for _ in texts]


def rec(offset: int, value: bytes, partition: int = 0) -> RawRecord:
    return RawRecord("news.raw", partition, offset, b"k", value, [("trace", b"1")])


def msg(i: str, title: str = "Stocks fall") -> bytes:
    return json.dumps({"id": i, "title": title, "published_at": "2024-01-01T00:00:00+00:00"}).encode()


def test_validate_batch_keeps_last_copy_of_an_id_and_dead_letters_the_rest() -> None:
    plan = validate_batch([rec(0, msg("a", "old")), rec(1, b"{bad"), rec(2, msg("b")), rec(3, msg("a", "new"))])
    assert [a.message.id for a in plan.accepted] == ["b", "a"]
    assert plan.accepted[1].message.title == "new" and plan.duplicates == 1
    assert [(d.record.offset, d.reason) for d in plan.dead] == [(1, "invalid_json")]


def test_an_engine_refusal_dead_letters_one_message_and_scores_the_rest() -> None:
    plan = validate_batch([rec(0, msg("a")), rec(1, msg("b", "BAD headline")), rec(2, msg("c"))])
    clf = RefusesWordClassifier()
    scored, dead = classify_accepted(clf, plan.accepted)
    assert [s.accepted.message.id for s in scored] == ["a", "c"]
    assert [(d.record.offset, d.reason, d.detail) for d in dead] == [(1, "engine_rejected", "refused by test double")]


def test_db_item_and_scored_event_carry_the_prediction() -> None:
    plan = validate_batch([rec(5, msg("a"), partition=1)])
    scored, _ = classify_accepted(RefusesWordClassifier(), plan.accepted)
    item = db_item(scored[0], story_key=lambda t: t.lower())
    assert (item.id, item.kafka_partition, item.kafka_offset, item.story_key) == ("a", 1, 5, "stocks fall")
    assert abs(item.score - (0.1 - 0.7)) < 1e-9 and item.model_version == "double-1"
    key, value = scored_event(scored[0], datetime(2024, 1, 2, tzinfo=timezone.utc))
    event = ScoredEvent.model_validate_json(value)
    assert key == b"a" and event.sentiment == "negative" and event.probabilities["negative"] == 0.7
    assert event.published_at is not None and event.scored_at.year == 2024


def test_dead_letter_keeps_original_bytes_headers_and_position() -> None:
    plan = validate_batch([rec(9, b"\xff", partition=1)])
    key, value, headers = deadletter_record(plan.dead[0], datetime(2024, 1, 1, tzinfo=timezone.utc))
    assert key == b"k" and value == b"\xff" and ("trace", b"1") in headers
    meta = describe_deadletter(headers)
    assert meta["reason"] == "not_utf8" and meta["partition"] == "1" and meta["offset"] == "9"
    assert meta["topic"] == "news.raw" and meta["time"].startswith("2024-01-01")
