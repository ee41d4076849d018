"""The pipeline's guarantee as code, checked at the end of every fault test and by benchmarks/bench_chaos.py.

For every partition of news.raw: every offset below the consumer group's committed offset belongs to a
record that is either in the database (its article, with this record's content, and a score) or on news.deadletter (reason, original
topic/partition/offset and the sha256 of the original bytes). No (article id, model version) row is
written twice. Duplicate news.scored events are counted (at-least-once), not hidden.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from storage.db import make_engine
from streams.messages import NewsMessage, parse_news
from streams.processing import content_fingerprint, describe_deadletter


@dataclass
class InvariantReport:
    committed: dict[int, int] = field(default_factory=dict)
    records_checked: int = 0
    stored: int = 0
    dead_by_reason: Counter[str] = field(default_factory=Counter)
    lost: list[tuple[int, int, str]] = field(default_factory=list)  # (partition, offset, why)
    bad_dead_letters: list[tuple[int, int, str]] = field(default_factory=list)
    duplicate_rows: int = 0  # (article, model version) score rows stored twice: the primary key forbids it
    # records both stored (an article row from that offset) and dead-lettered: one record, two outcomes
    double_outcomes: list[tuple[int, int]] = field(default_factory=list)
    scored_events: int = 0
    duplicate_scored_events: int = 0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.bad_dead_letters and self.duplicate_rows == 0 and not self.double_outcomes

    def summary(self) -> str:
        return (f"checked={self.records_checked} stored={self.stored} dead={dict(self.dead_by_reason)} "
                f"lost={len(self.lost)} {self.lost[:5]} bad_dlq={self.bad_dead_letters[:5]} "
                f"duplicate_rows={self.duplicate_rows} double_outcomes={self.double_outcomes[:5]} "
                f"scored_events={self.scored_events} "
                f"duplicate_scored_events={self.duplicate_scored_events} committed={self.committed}")


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its current end (the Fetch high watermark, not ListOffsets: FACTS.md)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        done: set[int] = set()
        idle = 0
        while len(done) < len(tps) and idle < 20:
            polled = consumer.poll(timeout_ms=500)
            idle = 0 if polled else idle + 1
            for batch in polled.values():
                records.extend(batch)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None and consumer.position(tp) >= high:
                    done.add(tp.partition)
        return records
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in sorted(parts)}
    finally:
        consumer.close()


def check_invariant(bootstrap: str, db_url: str, topics: Any, group_id: str) -> InvariantReport:
    """Build the report; ``report.ok`` is the guarantee. ``topics`` has raw / scored / deadletter names."""
    report = InvariantReport(committed=committed_offsets(bootstrap, group_id, topics.raw))
    raw = read_topic(bootstrap, topics.raw)
    dead: dict[tuple[int, int], dict[str, str]] = {}
    for record in read_topic(bootstrap, topics.deadletter):
        meta = describe_deadletter(list(record.headers or []))
        if meta.get("topic") == topics.raw:
            dead[(int(meta["partition"]), int(meta["offset"]))] = meta
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            scored_ids = set(conn.execute(text("SELECT DISTINCT article_id FROM scores")).scalars())
            # the content each stored article was written with: a copy of an id with OTHER content must be
            # dead-lettered (first write wins), so "its id is scored" alone would hide a lost conflicting copy
            stored_content = {article_id: sha for article_id, sha in conn.execute(text(
                "SELECT id, content_sha256 FROM articles"))}
            # where each stored article came from (one raw topic per database, as in the tests)
            stored_at = {(int(p), int(o)) for p, o in conn.execute(text(
                "SELECT kafka_partition, kafka_offset FROM articles WHERE kafka_offset IS NOT NULL"))}
            report.duplicate_rows = int(conn.execute(text(
                "SELECT count(*) FROM (SELECT 1 FROM scores GROUP BY article_id, model_version HAVING count(*) > 1) d"
            )).scalar_one())
    finally:
        engine.dispose()
    for record in raw:
        if record.offset >= report.committed.get(record.partition, 0):
            continue
        report.records_checked += 1
        where = (record.partition, record.offset)
        if where in dead:
            if where in stored_at:
                report.double_outcomes.append(where)
            meta = dead[where]
            report.dead_by_reason[meta.get("reason", "")] += 1
            if not meta.get("reason") or meta.get("sha256") != hashlib.sha256(record.value or b"").hexdigest():
                report.bad_dead_letters.append((*where, f"reason={meta.get('reason')!r} sha256 mismatch or missing"))
            continue
        parsed = parse_news(record.value)
        if not isinstance(parsed, NewsMessage):
            report.lost.append((*where, f"unparseable ({parsed.reason}) and not dead-lettered"))
        elif parsed.id not in scored_ids:
            report.lost.append((*where, f"id {parsed.id!r} neither scored nor dead-lettered"))
        elif stored_content.get(parsed.id) not in (None, content_fingerprint(parsed)):
            report.lost.append((*where, f"id {parsed.id!r} is stored with other content and this copy was "
                                        "not dead-lettered"))
        else:
            report.stored += 1
    events = Counter()
    for record in read_topic(bootstrap, topics.scored):
        events[record.key] += 1  # key = article id; one model version per test run
    report.scored_events = sum(events.values())
    report.duplicate_scored_events = sum(n - 1 for n in events.values())
    return report
