"""Replay news into news.raw with kafka-python (``marketmood publish``, the demo, benchmarks).

Two ways to pace: a fixed rate (``RateLimiter``), or as a live stream (``LiveClock``): each record goes out
when the wall clock reaches its ``published_at``, which is what a retimed history needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from streams.sources import TIME_PRECISION_FIELD, Record, record_time


def encode(record: Record) -> tuple[bytes | None, bytes]:
    """Kafka key (the article id, so copies of one article share a partition) and value."""
    if isinstance(record, bytes):
        return None, record
    key = record.get("id")
    return (str(key).encode() if key is not None else None), json.dumps(record, ensure_ascii=False).encode()


def headers(record: Record) -> list[tuple[str, bytes]]:
    """Kafka headers: ``time-precision`` when the source gives less than a timestamp (e.g. ``day``)."""
    if isinstance(record, dict) and record.get(TIME_PRECISION_FIELD):
        return [("time-precision", str(record[TIME_PRECISION_FIELD]).encode())]
    return []


def make_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,  # a 1 MB article body still fits
        "acks": "all",
        "retries": 5,
        # Every record is acknowledged or failed within 30 s (default 120 s): a broker that went away mid-replay
        # stops the replay that soon, and publish()'s 60-s flush always outlasts it, so its counts are exact.
        "request_timeout_ms": 15_000,
        "delivery_timeout_ms": 30_000,
    }
    options.update(overrides)
    return KafkaProducer(**options)


class RateLimiter:
    """Paces calls to ``rate`` per second on average (0 = unlimited), without drift."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.start: float | None = None
        self.count = 0

    def wait(self) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        if self.start is None:
            self.start = now
        due = self.start + self.count / self.rate
        if due > now:
            self.sleep(due - now)
        self.count += 1


class LiveClock:
    """Sleeps until each record's ``published_at`` (a record in the past goes out at once)."""

    def __init__(self, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.clock, self.sleep = clock, sleep

    def wait(self, record: Record, stop: Callable[[], bool] | None = None) -> None:
        moment: datetime | None = record_time(record)
        if moment is None:
            return
        while True:  # in slices, so a stop request is honoured during a long gap
            delay = moment.timestamp() - self.clock()
            if delay <= 0 or (stop is not None and stop()):
                return
            self.sleep(min(delay, 1.0))


class PublishError(RuntimeError):
    """Some sends were not acknowledged by the broker (it refused them, or it was unreachable until the
    producer's delivery timeout or the flush timeout): ``published`` counts the acknowledged ones."""

    def __init__(self, published: int, failed: int, first_error: BaseException) -> None:
        super().__init__(f"{failed} of {published + failed} messages were not accepted by the broker "
                         f"(first error: {type(first_error).__name__}: {first_error}); {published} were published")
        self.published, self.failed, self.first_error = published, failed, first_error


@dataclass
class Delivery:
    """What one ``publish`` call got done, readable even after it raised (a dead broker, a damaged file,
    Ctrl-C): ``sent`` were handed to the producer, ``acknowledged`` confirmed by the broker (updated from the
    producer's I/O thread, final once the producer is flushed or closed); ``last_sent`` is where a rerun resumes."""

    sent: int = 0
    acknowledged: int = 0
    errors: list[BaseException] = field(default_factory=list)
    last_sent: Record | None = None

    def _acked(self, _metadata: object) -> None:
        self.acknowledged += 1


def close_producer(producer: KafkaProducer, timeout_s: float = 10.0) -> None:
    """Close ``producer``, waiting up to ``timeout_s`` for what it still holds, and never raise for a timeout.

    kafka-python 3's ``close`` flushes first and raises KafkaTimeoutError when records are still pending (the
    broker went away), which replaced a clear error with a traceback; what cannot be delivered in time is
    abandoned (its errbacks fire, so it is counted as not acknowledged)."""
    try:
        producer.close(timeout_s)
        return
    except KafkaTimeoutError:
        pass
    sender = getattr(producer, "_sender", None)  # no public way to abandon pending records
    if sender is not None:
        sender.force_close()
        sender.join(timeout_s)
    try:
        producer.close(0)
    except KafkaTimeoutError:
        pass


def publish(
    records: Iterable[Record],
    *,
    producer: KafkaProducer,
    topic: str,
    rate: float = 0.0,
    limit: int | None = None,
    on_sent: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    live: LiveClock | None = None,
    delivery: Delivery | None = None,
    flush_timeout_s: float = 60.0,
) -> int:
    """Send records to ``topic`` at ``rate`` msg/s (0 = as fast as possible), or each at its ``published_at``
    when ``live`` is given; flushes; returns the count, every one acknowledged by the broker. Pass ``delivery``
    to read the counts when this raises.

    Raises PublishError when any send failed or was not acknowledged within ``flush_timeout_s``: ``flush``
    does not raise for failed records, so without the callbacks a refused or timed-out message would be
    counted as published; ``published`` counts acknowledgements, not sends."""
    limiter = RateLimiter(0 if live is not None else rate)
    done = delivery if delivery is not None else Delivery()
    for record in records:
        if (limit is not None and done.sent >= limit) or (stop is not None and stop()):
            break
        if done.errors:  # the broker refused one or is gone (delivery timeout): stop, don't feed the void for hours
            break
        if live is not None:
            live.wait(record, stop)
            if stop is not None and stop():
                break
        limiter.wait()
        key, value = encode(record)
        future = producer.send(topic, key=key, value=value, headers=headers(record) or None)
        future.add_callback(done._acked).add_errback(done.errors.append)
        done.sent += 1
        done.last_sent = record
        if on_sent is not None:
            on_sent(done.sent)
    try:
        producer.flush(flush_timeout_s)
    except KafkaTimeoutError:  # the broker went away: what was not acknowledged is not published
        waited = KafkaTimeoutError(f"no acknowledgement within {flush_timeout_s:g} s of the last send")
        raise PublishError(done.acknowledged, done.sent - done.acknowledged,
                           done.errors[0] if done.errors else waited) from None
    if done.errors:
        raise PublishError(done.acknowledged, done.sent - done.acknowledged, done.errors[0])
    return done.sent
