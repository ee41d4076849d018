"""Pure batch rules: de-duplication, isolation of failing texts and rows, dead-letter and news.scored formats."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timezone

import pytest

from models.prediction import Prediction
from streams.messages import ScoredEvent
from streams.processing import (
    ClassifierUnavailableError,
    build_rows,
    classify_accepted,
    copies_of_dead,
    db_item,
    deadletter_record,
    describe_deadletter,
    scored_event,
    validate_batch,
)
from tests.streams.records import RefusesWordClassifier, msg, rec


def test_identical_copies_are_dropped_and_copies_with_other_content_left_to_the_first_write_wins_rule() -> None:
    plan = validate_batch([
        rec(0, msg("a", "first")), rec(1, b"{bad"), rec(2, msg("b")), rec(3, msg("a", "first")),
        rec(4, msg("a", "changed headline")),
    ])
    assert [(a.message.id, a.record.offset) for a in plan.accepted] == [("a", 0), ("b", 2), ("a", 4)]
    assert plan.duplicates == 1
    assert [(d.record.offset, d.reason) for d in plan.dead] == [(1, "invalid_json")]


def test_an_identical_copy_shares_the_dead_letter_of_its_first_copy() -> None:
    """A dropped copy has no outcome of its own: when the first copy is dead-lettered (here the engine refuses
    it), the copy is too, with the same reason; a copy of a scored message is a plain duplicate."""
    plan = validate_batch([rec(0, msg("a", "BAD one")), rec(1, msg("b")), rec(2, msg("a", "BAD one")),
                           rec(3, msg("b"))])
    scored, dead = classify_accepted(RefusesWordClassifier(), plan.accepted)
    assert plan.duplicates == 2 and [d.record.offset for d in dead] == [0]
    copies = copies_of_dead(plan.copies, dead)
    assert [(d.record.offset, d.reason) for d in copies] == [(2, "engine_rejected")]
    assert "identical copy of offset 0" in copies[0].detail


def test_a_copy_written_differently_is_the_same_article() -> None:
    """Ticker order and the spelling of one instant are the scraper's, not the article's: before, a re-sent copy
    with them changed was dead-lettered as a conflicting duplicate."""
    first = {"id": "a", "title": "Oil falls", "published_at": "2024-05-01T14:00:00+00:00", "tickers": ["XOM", "CVX"]}
    again = {**first, "published_at": "2024-05-01T10:00:00-04:00", "tickers": ["cvx", "XOM"]}
    changed = {**first, "published_at": "2024-05-01T14:00:01Z"}
    plan = validate_batch([rec(i, json.dumps(m).encode()) for i, m in enumerate((first, again, changed))])
    assert [a.record.offset for a in plan.accepted] == [0, 2] and plan.duplicates == 1


def test_an_impossible_kafka_timestamp_is_no_time_not_a_dead_letter() -> None:
    """A producer writing microseconds gives year ~50,000: before, building the row raised and the valid article
    went to the dead-letter topic as row_error."""
    from dataclasses import replace

    micro = replace(rec(0, msg("a")), timestamp_ms=1_714_521_600_000_000)
    assert micro.kafka_time is None
    assert replace(rec(0, msg("a")), timestamp_ms=1_714_521_600_000).kafka_time == datetime(2024, 5, 1, tzinfo=timezone.utc)
    plan = validate_batch([micro])
    scored, dead = classify_accepted(RefusesWordClassifier(), plan.accepted)
    rows, unbuildable = build_rows(scored, lambda title: "k")
    assert dead == [] and unbuildable == [] and rows[0][1].kafka_timestamp is None


def test_parse_failures_of_any_kind_become_reasons_never_exceptions() -> None:
    nested = b'{"id":"bad","title":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    future = json.dumps({"id": "f", "title": "t", "published_at": "9999-12-31T23:59:59Z"}).encode()
    plan = validate_batch([rec(0, nested), rec(1, future), rec(2, msg("ok"))])
    assert [a.message.id for a in plan.accepted] == ["ok"]
    assert [(d.record.offset, d.reason) for d in plan.dead] == [(0, "too_deep"), (1, "invalid_fields")]


class FailsOnWord:
    """Raises RuntimeError (not InvalidTextError) on texts with ``word``; ``broken`` fails on everything."""

    model_version = "double-2"

    def __init__(self, word: str = "BOOM", broken: bool = False) -> None:
        self.word, self.broken, self.calls = word, broken, 0

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls += 1
        if self.broken or any(self.word in t for t in texts):
            raise RuntimeError("kernel failure")
        return [Prediction("Markets", 0.9, "neutral", 0.1, 0.8, 0.1, self.model_version) for _ in texts]


def test_any_classifier_error_is_isolated_to_its_text_by_bisection() -> None:
    plan = validate_batch([rec(i, msg(f"a{i}", "BOOM" if i == 5 else f"calm {i}")) for i in range(8)])
    scored, dead = classify_accepted(FailsOnWord(), plan.accepted)
    assert [s.accepted.record.offset for s in scored] == [0, 1, 2, 3, 4, 6, 7]
    assert [(d.record.offset, d.reason) for d in dead] == [(5, "engine_error")]
    assert "RuntimeError: kernel failure" in dead[0].detail


def test_a_classifier_broken_for_every_text_is_systemic_not_a_dead_letter() -> None:
    plan = validate_batch([rec(i, msg(f"a{i}")) for i in range(4)])
    with pytest.raises(ClassifierUnavailableError):
        classify_accepted(FailsOnWord(broken=True), plan.accepted)


def test_a_row_that_cannot_be_built_is_dead_lettered_alone() -> None:
    plan = validate_batch([rec(0, msg("a", "fine")), rec(1, msg("b", "explodes"))])
    scored, _ = classify_accepted(FailsOnWord(), plan.accepted)

    def story_key(title: str) -> str:
        if title == "explodes":
            raise ValueError("bad title")
        return title

    rows, dead = build_rows(scored, story_key)
    assert [item.id for _, item in rows] == ["a"]
    assert [(d.record.offset, d.reason) for d in dead] == [(1, "row_error")]


def test_a_dead_letter_too_large_for_the_broker_becomes_a_stub_with_hash_and_size() -> None:
    big = b"x" * 5_000
    plan = validate_batch([rec(3, big)])
    key, value, headers = deadletter_record(plan.dead[0], max_bytes=1_000)
    meta = describe_deadletter(headers)
    stub = json.loads(value)
    assert stub["truncated"] and stub["size"] == 5_000 and stub["offset"] == 3
    assert stub["sha256"] == hashlib.sha256(big).hexdigest() == meta["sha256"]
    assert meta["truncated"] == "1" and meta["reason"] == "invalid_json" and len(value) < 1_000


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


class NaNOnWord(FailsOnWord):
    """A model that returns NaN probabilities for one text (a numerical blow-up), or for every text."""

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls += 1
        nan = float("nan")
        return [Prediction("Markets", nan, "neutral", nan, nan, nan, self.model_version)
                if self.broken or self.word in t else
                Prediction("Markets", 0.9, "neutral", 0.1, 0.8, 0.1, self.model_version) for t in texts]


def test_a_non_finite_prediction_is_dead_lettered_not_stored() -> None:
    """A NaN score stored would make every mean over its topic NaN (sentiment index, alert windows)."""
    plan = validate_batch([rec(i, msg(f"a{i}", "BOOM" if i == 2 else f"calm {i}")) for i in range(5)])
    scored, dead = classify_accepted(NaNOnWord(), plan.accepted)
    assert [s.accepted.record.offset for s in scored] == [0, 1, 3, 4]
    assert [(d.record.offset, d.reason) for d in dead] == [(2, "engine_error")]
    assert "non-finite" in dead[0].detail


def test_a_model_that_gives_nan_for_every_text_is_systemic() -> None:
    plan = validate_batch([rec(i, msg(f"a{i}")) for i in range(3)])
    with pytest.raises(ClassifierUnavailableError):
        classify_accepted(NaNOnWord(broken=True), plan.accepted)
