"""Pure batch logic of the worker: raw records -> accepted / dead-lettered -> predictions -> rows and events.

Nothing here does I/O, so the rules are unit-tested without a broker or a database:

* validation never raises (``parse_news``); a record that cannot be parsed is a dead letter with a reason;
* the same id twice: the FIRST write wins. An identical copy in the same batch is a plain duplicate (scored
  once, with the first copy: when that one is dead-lettered, so is the copy, with the same reason); a copy
  with different content is refused by the database sink (``conflicting_duplicate``) in arrival order, so
  the outcome is the same whether the copies land in one batch or in two;
* any classifier failure is isolated: ``InvalidTextError`` names the text; any other exception splits the
  batch in halves until the failing text is alone (a NaN or infinite probability counts as a failure: stored,
  it would make every mean over its topic NaN). A lone failure is dead-lettered (``engine_error``) only
  when the classifier still scores a known-good canary text; otherwise the model itself is broken and
  ``ClassifierUnavailableError`` tells the worker to stall and retry, never to dead-letter the stream;
* building a database row is isolated per record the same way (``row_error``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

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
DLQ_SHA256 = "mm.dlq.sha256"
DLQ_SIZE = "mm.dlq.size"
DLQ_TRUNCATED = "mm.dlq.truncated"

#: A headline every working model scores; used to tell "this text breaks the model" from "the model is broken".
CANARY_TEXT = "Shares were little changed in early trading"


class ClassifierUnavailableError(RuntimeError):
    """The classifier fails even on the canary text: a systemic fault (stall and retry, do not dead-letter)."""


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
    #: why the Kafka client could not unpack this record (then key, value and headers are not available):
    #: it is dead-lettered as ``undecodable_record`` with its coordinates, never parsed
    unreadable: str | None = None

    @property
    def kafka_time(self) -> datetime | None:
        """The record's Kafka timestamp, or None when absent or not a time (a producer that wrote microseconds
        gives year ~50,000: the valid article it carries must not be dead-lettered over it)."""
        if not self.timestamp_ms:
            return None
        try:
            return datetime.fromtimestamp(self.timestamp_ms / 1000, timezone.utc)
        except (ValueError, OverflowError, OSError):
            return None


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


@dataclass(frozen=True)
class Copy:
    """An identical copy of an accepted message in the same batch: not scored itself; it shares the outcome of
    ``first`` (stored with it, or dead-lettered with the same reason)."""

    record: RawRecord
    first: RawRecord


@dataclass
class BatchPlan:
    """What one micro-batch turns into."""

    accepted: list[Accepted] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)  # identical copies of an id already in the batch

    @property
    def duplicates(self) -> int:
        return len(self.copies)


def content_fingerprint(message: NewsMessage) -> str:
    """sha256 of what makes an article itself; two copies of an id with different fingerprints conflict.

    Only the content counts, not how it was written: the instant in UTC (``-04:00`` and ``Z`` spellings of one
    time are one article) and the set of tickers (their order is the scraper's, not the article's)."""
    published = message.published_at.astimezone(timezone.utc).isoformat() if message.published_at else None
    payload = json.dumps(
        [message.title, message.article_body, message.source, message.url, published, sorted(message.tickers)],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def validate_batch(records: Sequence[RawRecord]) -> BatchPlan:
    """Split records into valid messages and dead letters; identical copies of a message are dropped.

    Copies of an id with DIFFERENT content are all kept: the database sink decides, in arrival order, that
    the first write wins and hands the others back as ``conflicting_duplicate``, exactly as it would had
    the copies arrived in separate batches.
    """
    plan = BatchPlan()
    seen: dict[tuple[str, str], RawRecord] = {}
    for record in records:
        if record.unreadable is not None:
            plan.dead.append(DeadLetter(record, "undecodable_record", record.unreadable))
            continue
        parsed = parse_news(record.value)
        if isinstance(parsed, Rejection):
            plan.dead.append(DeadLetter(record, parsed.reason, parsed.detail))
            continue
        key = (parsed.id, content_fingerprint(parsed))
        if key in seen:
            plan.copies.append(Copy(record, seen[key]))
            continue
        seen[key] = record
        plan.accepted.append(Accepted(record, parsed))
    return plan


def copies_of_dead(copies: Sequence[Copy], dead: Sequence[DeadLetter]) -> list[DeadLetter]:
    """A dead letter for each copy whose first copy is dead-lettered: same reason, the detail naming the first.
    (A copy has no outcome of its own; without this it would be dropped silently.)"""
    by_position = {(d.record.topic, d.record.partition, d.record.offset): d for d in dead}
    out: list[DeadLetter] = []
    for c in copies:
        first = by_position.get((c.first.topic, c.first.partition, c.first.offset))
        if first is not None:
            out.append(DeadLetter(c.record, first.reason,
                                  f"identical copy of offset {c.first.offset}: {first.detail}"[:2000]))
    return out


def finite_prediction(prediction: Prediction) -> bool:
    """False when a probability is NaN or infinite: such a score would be stored and make every mean, index and
    alert window over it NaN (the alert evidence could not even be written), so it is treated as a failure."""
    return all(math.isfinite(v) for v in (prediction.topic_confidence, prediction.p_negative,
                                           prediction.p_neutral, prediction.p_positive))


def classify_accepted(
    classifier: Classifier, accepted: Sequence[Accepted], *, canary: str = CANARY_TEXT
) -> tuple[list[Scored], list[DeadLetter]]:
    """Score every accepted message, isolating the texts the classifier fails on (see the module docstring)."""
    scored: list[Scored] = []
    dead: list[DeadLetter] = []
    canary_ok: list[bool] = []  # checked at most once per batch

    def model_works() -> bool:
        if not canary_ok:
            try:
                verdict = classifier.classify([canary])
                canary_ok.append(len(verdict) == 1 and finite_prediction(verdict[0]))
            except Exception:  # noqa: BLE001 - a broken model is exactly what this detects
                canary_ok.append(False)
        return canary_ok[0]

    def run(group: list[Accepted]) -> None:
        pending = list(group)
        while pending:
            try:
                predictions = classifier.classify([a.message.text for a in pending])
                if len(predictions) != len(pending):
                    raise RuntimeError(f"classifier returned {len(predictions)} predictions for {len(pending)} texts")
                if not all(map(finite_prediction, predictions)):  # stored, a NaN poisons every mean over it
                    raise ValueError("classifier returned a non-finite probability")
            except InvalidTextError as exc:
                if not 0 <= exc.index < len(pending):
                    raise ClassifierUnavailableError(f"classifier named index {exc.index} of {len(pending)}") from exc
                bad = pending.pop(exc.index)
                dead.append(DeadLetter(bad.record, "engine_rejected", exc.reason))
                continue
            except Exception as exc:  # noqa: BLE001 - isolate the text (or find the model broken)
                if len(pending) > 1:
                    middle = len(pending) // 2
                    run(pending[:middle])
                    run(pending[middle:])
                    return
                if not model_works():
                    raise ClassifierUnavailableError(f"classifier fails on the canary text too: {exc!r}") from exc
                dead.append(DeadLetter(pending[0].record, "engine_error", f"{type(exc).__name__}: {exc}"[:500]))
                return
            scored.extend(Scored(a, p) for a, p in zip(pending, predictions, strict=True))
            return

    run(list(accepted))
    order = {id(a): i for i, a in enumerate(accepted)}
    scored.sort(key=lambda s: order[id(s.accepted)])
    return scored, dead


def db_item(scored: Scored, story_key: Callable[[str], str | None]) -> ScoredArticle:
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
        kafka_timestamp=rec.kafka_time,
        content_sha256=content_fingerprint(msg),
        model_version=pred.model_version,
        topic=pred.topic,
        topic_confidence=pred.topic_confidence,
        sentiment=pred.sentiment,
        p_negative=pred.p_negative,
        p_neutral=pred.p_neutral,
        p_positive=pred.p_positive,
        score=pred.score,
    )


def build_rows(
    scored: Sequence[Scored], story_key: Callable[[str], str | None]
) -> tuple[list[tuple[Scored, ScoredArticle]], list[DeadLetter]]:
    """``db_item`` for each scored message; a record whose row cannot be built is dead-lettered alone."""
    rows: list[tuple[Scored, ScoredArticle]] = []
    dead: list[DeadLetter] = []
    for s in scored:
        try:
            rows.append((s, db_item(s, story_key)))
        except Exception as exc:  # noqa: BLE001 - one bad record must not take the batch down
            dead.append(DeadLetter(s.accepted.record, "row_error", f"{type(exc).__name__}: {exc}"[:500]))
    return rows, dead


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


def deadletter_record(
    dead: DeadLetter, now: datetime | None = None, *, max_bytes: int | None = None
) -> tuple[bytes | None, bytes, Headers]:
    """Key, value and headers of the news.deadletter record: original key/value/headers + why and where.

    With ``max_bytes``, a record that would not fit (the producer's request limit) becomes a stub: the
    value is a small JSON document (reason, coordinates, sha256 and size of the original), the original
    headers are dropped, and ``mm.dlq.truncated`` is set. The partition keeps flowing either way.
    """
    now = now or datetime.now(timezone.utc)
    rec = dead.record
    value = rec.value or b""
    meta: Headers = [
        (DLQ_REASON, dead.reason.encode()),
        (DLQ_DETAIL, dead.detail[:2000].encode("utf-8", "replace")),
        (DLQ_TOPIC, rec.topic.encode()),
        (DLQ_PARTITION, str(rec.partition).encode()),
        (DLQ_OFFSET, str(rec.offset).encode()),
        (DLQ_TIME, now.isoformat().encode()),
        (DLQ_SHA256, hashlib.sha256(value).hexdigest().encode()),
        (DLQ_SIZE, str(len(value)).encode()),
    ]
    key = rec.key
    headers: Headers = [*rec.headers, *meta]
    if max_bytes is not None and record_size(key, value, headers) > max_bytes:
        stub = {
            "truncated": True, "reason": dead.reason, "detail": dead.detail[:500], "topic": rec.topic,
            "partition": rec.partition, "offset": rec.offset, "size": len(value),
            "sha256": hashlib.sha256(value).hexdigest(),
        }
        key = key[:256] if key else key
        value, headers = json.dumps(stub).encode(), [*meta, (DLQ_TRUNCATED, b"1")]
    return key, value, headers


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes a record takes on the wire, roughly (payload plus header names and values, plus framing)."""
    return 64 + len(key or b"") + len(value or b"") + sum(len(k) + len(v) + 8 for k, v in headers)


def describe_deadletter(headers: Headers) -> dict[str, str]:
    """Readable view of a dead-letter record's metadata headers (for tools and tests)."""
    return {k.removeprefix("mm.dlq."): v.decode("utf-8", "replace") for k, v in headers if k.startswith("mm.dlq.")}
