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
    Db,
    InProcessWorker,
    article,
    committed_total,
    produce,
    run_until_committed,
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
        assert first[0].end_checked_at is None  # a batch commit claims no "read to the end as of"
        # idle and caught up: the worker refreshes its progress, with the time it knew it was at the end
        later = wait_until(lambda: [p for p in _progress(db_url, topics.raw) if p.end_checked_at is not None], 30,
                           what="an idle caught-up claim")
    finally:
        worker.stop()
    assert later[0].updated_at > first[0].updated_at
    assert later[0].next_offset == 5 and later[0].max_event_time == first[0].max_event_time
    now = datetime.now(timezone.utc)
    mark = event_time_watermark(later, now)
    assert mark is not None and (now - mark).total_seconds() < 15  # a quiet stream's watermark is "now"


def test_a_stale_highwater_never_moves_the_watermark_past_records_still_in_kafka(
        make_topics, kafka_bootstrap: str, db_url: str, model_path: Path) -> None:
    """The worker freezes (its event loop blocked, as in a GC or VM pause or SIGSTOP) while news keeps
    arriving; when it wakes, its cached highwater still equals its position until the fetcher has processed
    a new response. A "caught up, now" claim made from it would put the watermark past records still in
    Kafka. Invariant, checked throughout: every record published before the watermark is in the database."""
    topics = make_topics(1)
    produce(kafka_bootstrap, topics.raw, [article(i, "st", published_at=datetime.now(timezone.utc).isoformat())
                                          for i in range(3)])
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                             provider=StaticProvider(build_engine(load_settings().model, model_path)))
    store = Db(db_url)
    published: list[datetime] = []
    seen: list[tuple[datetime | None, int]] = []

    def violations() -> list[datetime]:
        mark = event_time_watermark(_progress(db_url, topics.raw), datetime.now(timezone.utc))
        stored = store.articles()
        seen.append((mark, stored))
        # records are stored in offset order: the first `stored - 3` of `published` are in
        return [t for t in published[max(0, stored - 3):] if mark is not None and t < mark]

    try:
        wait_until(lambda: [p for p in _progress(db_url, topics.raw) if p.end_checked_at is not None], 30,
                   what="an idle caught-up claim")
        loop = worker.worker._loop
        assert loop is not None
        loop.call_soon_threadsafe(time.sleep, 8.0)  # the worker freezes for 8 s
        time.sleep(0.5)
        for i in range(6):  # news keeps coming meanwhile
            t = datetime.now(timezone.utc)
            produce(kafka_bootstrap, topics.raw, [article(100 + i, "st", published_at=t.isoformat())])
            published.append(t)
            time.sleep(1.0)
        deadline = time.monotonic() + 15  # through the wake-up and the catch-up
        while time.monotonic() < deadline:
            assert violations() == [], f"the watermark passed records still in Kafka: {seen[-3:]}"
            time.sleep(0.05)
        wait_until(lambda: store.articles() == 9, 60, what="the backlog stored after the wake-up")
        assert violations() == []
        last = published[-1]
        wait_until(lambda: (m := event_time_watermark(_progress(db_url, topics.raw), datetime.now(timezone.utc)))
                   is not None and m > last, 30, what="the watermark past the backlog once it is stored")
        assert violations() == []
    finally:
        worker.stop()
        store.close()


def test_a_producer_clock_ahead_does_not_move_the_partitions_event_time(make_topics, kafka_bootstrap: str,
                                                                       db_url: str, model_path: Path) -> None:
    """An article without published_at is stored at the write's time; its progress used the Kafka record time
    instead, so a producer whose clock ran 10 days ahead raised the partition's event time (a maximum, kept)
    and the alert watermark with it past every record still to come."""
    import json
    from datetime import timedelta

    from kafka import KafkaProducer

    topics = make_topics(1)
    message = article(0, "clock")
    del message["published_at"]
    ahead = datetime.now(timezone.utc) + timedelta(days=10)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topics.raw, value=json.dumps(message).encode(), timestamp_ms=int(ahead.timestamp() * 1000))
    producer.flush(30)
    producer.close()
    run_until_committed(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, records=1,
                        provider=StaticProvider(build_engine(load_settings().model, model_path)))
    [progress] = _progress(db_url, topics.raw)
    stored = Db(db_url).scalar("SELECT event_time FROM articles")
    assert progress.max_event_time is not None and abs(progress.max_event_time - stored) < timedelta(seconds=30)
    assert Db(db_url).scalar("SELECT kafka_timestamp FROM articles") == ahead.replace(microsecond=ahead.microsecond // 1000 * 1000)


def test_a_partition_whose_member_never_commits_holds_the_watermark_back(
        make_topics, kafka_bootstrap: str, db_url: str, model_path: Path) -> None:
    """A group member owns a partition and never commits (a worker crash-looping before its first batch): its
    partition had no progress row, so the watermark was taken over the other partition alone and the alert
    service judged windows without that partition's news. Every worker now registers every partition."""
    import threading

    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    topics = make_topics(2)
    group = f"mm-test-stuck-{topics.raw}"
    stuck = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False,
                          auto_offset_reset="earliest",  # aiokafka's one assignor: the group needs a common one
                          partition_assignment_strategy=[RoundRobinPartitionAssignor],
                          session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_interval_ms=10000)
    stuck.subscribe([topics.raw])
    done = threading.Event()

    def keep_polling() -> None:  # stays in the group (rebalances happen in poll), commits nothing
        while not done.is_set():
            stuck.poll(timeout_ms=200)

    poller = threading.Thread(target=keep_polling)
    poller.start()
    worker = None
    try:
        wait_until(lambda: stuck.assignment(), 60, what="the stuck member's assignment")
        worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, group_id=group,
                                 provider=StaticProvider(build_engine(load_settings().model, model_path)))
        wait_until(lambda: len(stuck.assignment()) == 1, 60, what="one partition each")
        produce(kafka_bootstrap, topics.raw, [article(i, "sk") for i in range(12)],
                keys=[f"k{i}".encode() for i in range(12)])  # keyed: both partitions get news
        owned = wait_until(lambda: [p for p in _progress(db_url, topics.raw) if p.end_checked_at is not None], 60,
                           what="the worker's caught-up claim on its partition")
    finally:
        if worker is not None:
            worker.stop()
        done.set()
        poller.join(timeout=10)
        stuck.close()
    progress = _progress(db_url, topics.raw)
    assert {p.partition for p in progress} == {0, 1}, progress
    assert len(owned) == 1 and event_time_watermark(progress, datetime.now(timezone.utc)) is None
