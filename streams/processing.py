"""Pure batch logic of the worker: raw records -> accepted / dead-lettered -> predictions -> rows and events.

Nothing here does I/O, so the rules (validation, per-text engine failures, de-duplication inside a batch,
dead-letter format, the news.scored payload) are unit-tested without a broker or a database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from models.prediction import Classifier, InvalidTextError, Prediction
from storage.articles import ScoredArticle
from streams.messages import NewsMessage, Rejection, ScoredEvent, parse_news

Headers = list[tuple[str, bytes]]

# Dead-letter headers (Kafka-Connect style: the value stays the original bytes, metadata rides in headers).
DLQ_REASON = "mm.dlq.reason"
DLQ_DETAIL = "mm.dlq.detail"
DLQ_TOPIC = "mm.dlq.topic"
DLQ_PARTITION = "mm.dlq.partition"
DLQ_OFFSET = "mm.dlq.offset"
DLQ_TIME = "mm.dlq.time"


@dataclass(frozen=True)
class RawRecord:
    """One consumed Kafka record, exactly as it arrived."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Accepted:
    record: RawRecord
    message: NewsMessage


@dataclass(frozen=True)
class DeadLetter:
    record: RawRecord
    reason: str
    detail: str


@dataclass(frozen=True)
class Scored:
    accepted: Accepted
    prediction: Prediction


@dataclass
class BatchPlan:
    """What one micro-batch turns into."""

    accepted: list[Accepted] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0  # same id twice in one batch: the later copy wins


def validate_batch(records: Sequence[RawRecord]) -> BatchPlan:
    """Split records into valid messages (last copy of each id wins) and dead letters."""
    plan = BatchPlan()
    by_id: dict[str, Accepted] = {}
    for record in records:
        parsed = parse_news(record.value)
        if isinstance(parsed, Rejection):
            plan.dead.append(DeadLetter(record, parsed.reason, parsed.detail))
            continue
        if parsed.id in by_id:
            plan.duplicates += 1
            del by_id[parsed.id]  # re-insert so the batch keeps arrival order of the winning copies
        by_id[parsed.id] = Accepted(record, parsed)
    plan.accepted = list(by_id.values())
    return plan


def classify_accepted(classifier: Classifier, accepted: Sequence[Accepted]) -> tuple[list[Scored], list[DeadLetter]]:
    """Score every accepted message; a text the engine refuses is dead-lettered, the rest still scored."""
    pending = list(accepted)
    dead: list[DeadLetter] = []
    while pending:
        try:
            predictions = classifier.classify([a.message.text for a in pending])
        except InvalidTextError as exc:
            if not 0 <= exc.index < len(pending):
                raise
            bad = pending.pop(exc.index)
            dead.append(DeadLetter(bad.record, "engine_rejected", exc.reason))
            continue
        if len(predictions) != len(pending):
            raise RuntimeError(f"classifier returned {len(predictions)} predictions for {len(pending)} texts")
        return [Scored(a, p) for a, p in zip(pending, predictions, strict=True)], dead
    return [], dead


def db_item(scored: Scored, story_key: Callable[[str], str]) -> ScoredArticle:
    """One article + its score, in the shape ``storage.articles.upsert_scored_batch`` takes."""
    msg, rec, pred = scored.accepted.message, scored.accepted.record, scored.prediction
    return ScoredArticle(
        id=msg.id,
        title=msg.title,
        body=msg.article_body,
        source=msg.source,
        url=msg.url,
        published_at=msg.published_at,
        tickers=tuple(msg.tickers),
        lang=msg.lang,
        story_key=story_key(msg.title),
        kafka_partition=rec.partition,
        kafka_offset=rec.offset,
        model_version=pred.model_version,
        topic=pred.topic,
        topic_confidence=pred.topic_confidence,
        sentiment=pred.sentiment,
        p_negative=pred.p_negative,
        p_neutral=pred.p_neutral,
        p_positive=pred.p_positive,
        score=pred.score,
    )


def scored_event(scored: Scored, scored_at: datetime) -> tuple[bytes, bytes]:
    """Key and JSON value of the news.scored record for one article."""
    msg, pred = scored.accepted.message, scored.prediction
    event = ScoredEvent(
        id=msg.id,
        topic=pred.topic,
        topic_confidence=pred.topic_confidence,
        sentiment=pred.sentiment,
        probabilities=pred.probabilities,
        score=pred.score,
        model_version=pred.model_version,
        tickers=list(msg.tickers),
        source=msg.source,
        published_at=msg.published_at,
        scored_at=scored_at,
    )
    return msg.id.encode(), event.model_dump_json().encode()


def deadletter_record(dead: DeadLetter, now: datetime | None = None) -> tuple[bytes | None, bytes, Headers]:
    """Key, value and headers of the news.deadletter record: original key/value/headers + why and where."""
    now = now or datetime.now(timezone.utc)
    rec = dead.record
    headers: Headers = [*rec.headers]
    headers += [
        (DLQ_REASON, dead.reason.encode()),
        (DLQ_DETAIL, dead.detail[:2000].encode("utf-8", "replace")),
        (DLQ_TOPIC, rec.topic.encode()),
        (DLQ_PARTITION, str(rec.partition).encode()),
        (DLQ_OFFSET, str(rec.offset).encode()),
        (DLQ_TIME, now.isoformat().encode()),
    ]
    return rec.key, rec.value or b"", headers


def describe_deadletter(headers: Headers) -> dict[str, str]:
    """Readable view of a dead-letter record's metadata headers (for tools and tests)."""
    return {k.removeprefix("mm.dlq."): v.decode("utf-8", "replace") for k, v in headers if k.startswith("mm.dlq.")}


def as_json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, default=str).encode()
