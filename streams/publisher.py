"""Replay news into news.raw with kafka-python at a fixed rate (``marketmood publish``, the demo, benchmarks)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaProducer

from streams.sources import Record


def encode(record: Record) -> tuple[bytes | None, bytes]:
    """Kafka key (the article id, so copies of one article share a partition) and value."""
    if isinstance(record, bytes):
        return None, record
    key = record.get("id")
    return (str(key).encode() if key is not None else None), json.dumps(record, ensure_ascii=False).encode()


def make_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,  # a 1 MB article body still fits
        "acks": "all",
        "retries": 5,
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


def publish(
    records: Iterable[Record],
    *,
    producer: KafkaProducer,
    topic: str,
    rate: float = 0.0,
    limit: int | None = None,
    on_sent: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Send records to ``topic`` at ``rate`` msg/s (0 = as fast as possible); flushes; returns the count."""
    limiter = RateLimiter(rate)
    sent = 0
    for record in records:
        if (limit is not None and sent >= limit) or (stop is not None and stop()):
            break
        limiter.wait()
        key, value = encode(record)
        producer.send(topic, key=key, value=value)
        sent += 1
        if on_sent is not None:
            on_sent(sent)
    producer.flush(60)
    return sent
