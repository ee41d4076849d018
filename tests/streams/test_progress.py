"""Partition progress written by the real worker (tansu + PostgreSQL): with every batch, in the batch's
transaction, and refreshed while the worker is idle and caught up, so the alert watermark follows the clock
on a quiet stream."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.pool import NullPool

from marketmood.engines import build_engine
from marketmood.settings import load_settings
from models.prediction import StaticProvider
from storage.db import make_engine
from storage.progress import event_time_watermark, read_progress
from tests.streams.harness import (
    InProcessWorker,
    article,
    committed_total,
    produce,
    wait_until,
)


def _progress(db_url: str, topic: str):
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return read_progress(conn, topic)
    finally:
        engine.dispose()


def test_progress_follows_commits_and_is_refreshed_while_idle(make_topics, kafka_bootstrap: str, db_url: str,
                                                              model_path: Path) -> None:
    topics = make_topics(1)
    messages = [article(i, "pr") for i in range(5)]  # published_at 2024-05-01 00:00 .. 00:04
    produce(kafka_bootstrap, topics.raw, [m for m in messages])
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                             provider=StaticProvider(build_engine(load_settings().model, model_path)))
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 5, 120,
                   what="5 committed")
        first = _progress(db_url, topics.raw)
        assert [(p.partition, p.next_offset, p.log_end_offset) for p in first] == [(0, 5, 5)]
        assert first[0].max_event_time == datetime(2024, 5, 1, 0, 4, tzinfo=timezone.utc)
        time.sleep(7)  # idle and caught up: the worker refreshes its progress
        later = _progress(db_url, topics.raw)
    finally:
        worker.stop()
    assert later[0].updated_at > first[0].updated_at
    assert later[0].next_offset == 5 and later[0].max_event_time == first[0].max_event_time
    now = datetime.now(timezone.utc)
    mark = event_time_watermark(later, now)
    assert mark is not None and (now - mark).total_seconds() < 15  # a quiet stream's watermark is "now"
