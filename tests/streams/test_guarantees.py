"""The delivery guarantee under adversarial input, on real tansu + real PostgreSQL + the real model.

Every test ends with the invariant checker (tests/streams/invariant.py): every record below the committed
offset is stored or dead-lettered with a reason and the hash of its bytes; no duplicate row.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from marketmood.engines import build_engine
from marketmood.settings import load_settings
from marketmood.tools.invariant import check_invariant, committed_offsets
from models.prediction import Prediction, StaticProvider
from storage.db import make_engine
from streams.novelty import story_key
from tests.streams.harness import (
    Db,
    InProcessWorker,
    WorkerProcess,
    article,
    committed_total,
    produce,
    run_until_committed,
    wait_until,
)

pytestmark = pytest.mark.timeout(400)

def _values(messages: Sequence[dict]) -> list[bytes]:
    return [json.dumps(m).encode() for m in messages]


def test_a_deeply_nested_record_is_dead_lettered_and_the_records_around_it_are_all_stored(
    make_topics, kafka_bootstrap: str, db_url: str, tmp_path: Path, model_path: Path
) -> None:
    """Issue 10's reproduction: 20 valid, one 100k-deep JSON value, 20 valid, one partition."""
    topics = make_topics(1)
    nested = b'{"id":"bad","title":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    values = _values([article(i, "before") for i in range(20)]) + [nested]
    values += _values([article(i, "after") for i in range(20)])
    produce(kafka_bootstrap, topics.raw, values)
    worker = WorkerProcess(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, home=tmp_path / "home",
                           model_path=model_path, batch_size=8)
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, f"mm-test-{topics.raw}", topics.raw) >= 41, 120,
                   what=f"all 41 offsets committed\n{worker.log()[-3000:]}")
        assert worker.alive()
    finally:
        code = worker.terminate(30)
    assert code == 0, worker.log()[-3000:]  # SIGTERM stops it promptly after a poison record
    report = check_invariant(kafka_bootstrap, db_url, topics, f"mm-test-{topics.raw}")
    assert report.ok, report.summary()
    assert report.stored == 40 and dict(report.dead_by_reason) == {"too_deep": 1}
    assert Db(db_url).articles() == 40


class FailsOnText:
    """The real engine, except that one headline makes it raise RuntimeError (a fault at the engine seam)."""

    def __init__(self, engine, poison: str) -> None:
        self.engine, self.poison = engine, poison
        self.model_version = engine.model_version

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        if any(self.poison in t for t in texts):
            raise RuntimeError("CUDA kernel failed (injected)")
        return self.engine.classify(texts)


def test_classifier_and_row_failures_are_isolated_to_their_record_and_dead_lettered(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    topics = make_topics(2)
    engine = build_engine(load_settings().model, model_path)
    messages = [article(i, "c") for i in range(30)]
    messages[7]["title"] = "Poison headline that breaks the engine"
    messages[19]["title"] = "Headline whose row cannot be built"

    def fragile_story_key(title: str) -> str | None:
        if "cannot be built" in title:
            raise ValueError("story key exploded (injected)")
        return story_key(title)

    produce(kafka_bootstrap, topics.raw, _values(messages), keys=[m["id"].encode() for m in messages])
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                             provider=StaticProvider(FailsOnText(engine, "Poison headline")),
                             story_key=fragile_story_key, batch_size=16)
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 30, 120, what="30 committed")
    finally:
        worker.stop()
    report = check_invariant(kafka_bootstrap, db_url, topics, worker.group_id)
    assert report.ok, report.summary()
    assert report.stored == 28 and dict(report.dead_by_reason) == {"engine_error": 1, "row_error": 1}


def test_the_checker_can_fail_a_record_removed_from_the_database_is_reported_lost(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    """The checker itself is tested: delete one stored article and it must name that record."""
    report = _report_after_tampering(kafka_bootstrap, db_url, model_path, make_topics(1),
                                     _values([article(i, "k") for i in range(5)]), "DELETE FROM articles WHERE id = 'k-3'")
    assert not report.ok and [(p, o) for p, o, _ in report.lost] == [(0, 3)]


def _report_after_tampering(kafka_bootstrap: str, db_url: str, model_path: Path, topics, values: list[bytes],
                            tamper: str):
    """Run a worker over ``values`` (the invariant must hold), then apply the SQL ``tamper`` to the database
    and return the checker's new report: the checker must be able to fail."""
    produce(kafka_bootstrap, topics.raw, values)
    worker = run_until_committed(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, records=len(values),
                                 provider=StaticProvider(build_engine(load_settings().model, model_path)))
    assert check_invariant(kafka_bootstrap, db_url, topics, worker.group_id).ok
    db = make_engine(db_url, poolclass=NullPool)
    with db.begin() as conn:
        conn.execute(text(tamper))
    db.dispose()
    return check_invariant(kafka_bootstrap, db_url, topics, worker.group_id)


def test_the_checker_can_fail_a_record_both_stored_and_dead_lettered_is_reported(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    """"No duplicate" must be checkable: the score-row check cannot fail (the primary key forbids it), so the
    checker also names any offset that has both an article row and a dead letter. Forged here: an article row
    is moved onto the dead-lettered record's offset."""
    values = _values([article(0, "two")]) + [b"{not json"] + _values([article(2, "two")])
    report = _report_after_tampering(kafka_bootstrap, db_url, model_path, make_topics(1), values,
                                     "UPDATE articles SET kafka_offset = 1 WHERE id = 'two-2'")
    assert not report.ok and report.double_outcomes == [(0, 1)]


def test_the_checker_can_fail_a_record_whose_id_is_stored_with_other_content_is_reported_lost(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    """A copy of an id with OTHER content must be dead-lettered (first write wins): "its id has a score" is not
    enough. Forged here: the stored article's content fingerprint no longer matches its record's."""
    report = _report_after_tampering(kafka_bootstrap, db_url, model_path, make_topics(1),
                                     _values([article(i, "c") for i in range(3)]),
                                     "UPDATE articles SET content_sha256 = 'another copy' WHERE id = 'c-1'")
    assert not report.ok and [(p, o) for p, o, _ in report.lost] == [(0, 1)]
    assert "other content" in report.lost[0][2]


def test_same_id_with_different_content_first_write_wins_in_one_batch_and_across_batches(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    topics = make_topics(1)
    engine = build_engine(load_settings().model, model_path)
    original = article(1, "dup", title="Original headline about earnings")
    changed = dict(original, title="A different headline under the same id")
    produce(kafka_bootstrap, topics.raw, _values([original, original, changed]))  # one batch
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                             provider=StaticProvider(engine), batch_size=8)
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 3, 120, what="batch one")
        produce(kafka_bootstrap, topics.raw, _values([changed, original]))  # a later batch
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 5, 120, what="batch two")
    finally:
        worker.stop()
    report = check_invariant(kafka_bootstrap, db_url, topics, worker.group_id)
    assert report.ok, report.summary()
    assert dict(report.dead_by_reason) == {"conflicting_duplicate": 2} and report.stored == 3
    db = make_engine(db_url, poolclass=NullPool)
    with db.connect() as conn:
        assert conn.execute(text("SELECT title FROM articles")).scalars().all() == ["Original headline about earnings"]
    db.dispose()


def test_a_record_too_large_to_dead_letter_becomes_a_stub_and_the_partition_keeps_flowing(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    topics = make_topics(1)
    engine = build_engine(load_settings().model, model_path)
    huge = b'{"id": "huge", "title": ' + b'"' + b"x" * 400_000 + b'"}'  # invalid: title over 2,000 chars
    values = _values([article(0, "s")]) + [huge] + _values([article(1, "s")])
    produce(kafka_bootstrap, topics.raw, values)
    # a producer limit below the record's size: the dead letter cannot be sent as it is
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                             provider=StaticProvider(engine), max_request_bytes=100_000)
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 3, 120, what="3 committed")
    finally:
        worker.stop()
    report = check_invariant(kafka_bootstrap, db_url, topics, worker.group_id)
    assert report.ok, report.summary()
    assert report.stored == 2 and dict(report.dead_by_reason) == {"invalid_fields": 1}
    assert worker.worker.metrics.deadletter_stubs._value.get() == 1


def _fuzz_values(n: int, seed: int) -> list[bytes]:
    """Generated and mutated news.raw values: valid ones, wrong types, huge/deep JSON, invalid UTF-8, lone
    surrogates, control characters, extreme timestamps, 100+ tickers, empty strings, truncations."""
    rng = random.Random(seed)
    valid = [article(i, "fz") for i in range(n)]
    out: list[bytes] = []
    deep = 0
    for i, msg in enumerate(valid):
        kind = rng.randrange(16)
        m = dict(msg)
        if kind <= 3:
            pass  # valid
        elif kind == 4:
            m["title"] = rng.choice([123, None, [], {"a": 1}, True, ""])
        elif kind == 5:
            m["published_at"] = rng.choice(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2024-13-45T99:00:00Z",
                                            "2024-05-01", 1714557600, "yesterday"])
        elif kind == 6:
            m["tickers"] = [f"T{j}" for j in range(rng.choice([100, 101, 500]))]
        elif kind == 7:
            m["title"] = "".join(chr(rng.randrange(0, 32)) for _ in range(rng.randrange(1, 40))) + " ctl"
        elif kind == 8:
            out.append(json.dumps(m).encode()[: rng.randrange(1, 60)])  # truncated JSON
            continue
        elif kind == 9:
            raw = bytearray(json.dumps(m).encode())
            for _ in range(rng.randrange(1, 5)):
                raw[rng.randrange(len(raw))] = rng.randrange(128, 256)  # invalid UTF-8 bytes
            out.append(bytes(raw))
            continue
        elif kind == 10:
            out.append(json.dumps(m).encode().replace(b'"title": "', b'"title": "\\ud800', 1))  # lone surrogate
            continue
        elif kind == 11:
            deep += 1  # a few 100k-deep values (each ~200 KB), the rest shallower: the broker holds them all
            depth = 100_000 if deep <= 10 else rng.choice([50, 2_000, 5_000])
            out.append(b'{"id": "deep%d", "title": ' % i + b"[" * depth + b"]" * depth + b"}")
            continue
        elif kind == 12:
            m["id"] = rng.choice(["", " ", "x" * 600, 5, None])
        elif kind == 13:
            m["title"] = "\U0001F4C8 " * rng.randrange(1, 300) + "emoji rally"  # valid, long
        elif kind == 14:
            out.append(rng.choice([b"", b"null", b"[]", b"42", b'"a string"', b"\x00\x00", b"{}"]))
            continue
        else:
            m["extra"] = {"nested": [list(range(50))] * 20}
        out.append(json.dumps(m).encode())
    return out


@pytest.mark.slow
def test_ten_thousand_fuzzed_values_never_crash_the_worker_and_every_rejection_has_a_reason(
    make_topics, kafka_bootstrap: str, db_url: str, tmp_path: Path, model_path: Path
) -> None:
    topics = make_topics(2)
    values = _fuzz_values(10_000, seed=20261201)
    produce(kafka_bootstrap, topics.raw, values)
    worker = WorkerProcess(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, home=tmp_path / "home",
                           model_path=model_path, batch_size=64)
    group = f"mm-test-{topics.raw}"
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, group, topics.raw) >= len(values), 300, interval_s=2,
                   what=f"all fuzzed values committed\n{worker.log()[-3000:]}")
        assert worker.alive(), worker.log()[-3000:]
    finally:
        code = worker.terminate(30)
    assert code == 0
    report = check_invariant(kafka_bootstrap, db_url, topics, group)
    assert report.ok, report.summary()
    assert report.records_checked == len(values)
    assert report.stored + sum(report.dead_by_reason.values()) == len(values)
    assert "" not in report.dead_by_reason and report.stored > 2_000


class HeldInInference:
    """The real engine, held inside ``classify`` until ``release`` is set: a batch stuck in inference while
    the group rebalances around it (a fault at the engine seam)."""

    def __init__(self, engine, entered, release) -> None:
        self.engine, self.entered, self.release = engine, entered, release
        self.model_version = engine.model_version

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.entered.set()
        self.release.wait(120)
        return self.engine.classify(texts)


def test_a_batch_prepared_across_a_rebalance_does_not_crash_the_worker(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    """Worker A is in inference on records of both partitions when B joins; A's drain gives up, the rebalance
    takes one partition away, then A's inference returns. Before: looking up the lost partition's log end
    raised AssertionError('Partition is not assigned') out of prepare_batch and the worker died."""
    import threading

    topics = make_topics(2)
    engine = build_engine(load_settings().model, model_path)
    messages = [article(i, "held") for i in range(16)]
    produce(kafka_bootstrap, topics.raw, _values(messages), keys=[m["id"].encode() for m in messages])
    entered, release = threading.Event(), threading.Event()
    a = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, batch_size=16,
                        provider=StaticProvider(HeldInInference(engine, entered, release)))
    b = None
    try:
        assert entered.wait(60), "worker A never reached inference"
        consumer = a.worker.consumer
        assert consumer is not None and len(consumer.assignment()) == 2
        b = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, batch_size=16,
                            provider=StaticProvider(engine), group_id=a.group_id)
        wait_until(lambda: len(consumer.assignment()) == 1, 90, what="the rebalance took a partition from A")
        release.set()
        wait_until(lambda: committed_total(kafka_bootstrap, a.group_id, topics.raw) >= 16, 120, what="16 committed")
    finally:
        release.set()
        a.stop()  # raises the worker's error, if it died
        if b is not None:
            b.stop()
    report = check_invariant(kafka_bootstrap, db_url, topics, a.group_id)
    assert report.ok, report.summary()
    assert report.stored == 16


@contextlib.contextmanager
def _database_outage(kafka_bootstrap: str, db_url: str, pg_server, model_path: Path, topics,
                     prefix: str) -> Iterator[InProcessWorker]:
    """A worker (batches of 4) that has committed 4 warm-up records, then PostgreSQL stopped until the block
    ends; the worker is stopped after the server is back."""
    produce(kafka_bootstrap, topics.raw, _values([article(i, prefix) for i in range(4)]))
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                             provider=StaticProvider(build_engine(load_settings().model, model_path)), batch_size=4)
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 4, 120, what="warm-up")
        pg_server.stop()
        try:
            yield worker
        finally:
            pg_server.start()
    finally:
        worker.stop()


def test_a_stop_is_honoured_while_batches_queue_behind_a_database_outage(
    make_topics, kafka_bootstrap: str, db_url: str, pg_server, model_path: Path
) -> None:
    """Database down, one batch retrying in the committer, one queued, a third waiting for room: before, the
    main loop waited for that room and never looked at the stop, so SIGTERM was ignored (and the worker stayed
    in its group) until PostgreSQL came back. Now it drains within drain_timeout_s (10 s here) and exits."""
    import time

    topics = make_topics(1)
    with _database_outage(kafka_bootstrap, db_url, pg_server, model_path, topics, "warm") as worker:
        produce(kafka_bootstrap, topics.raw, _values([article(i, "outage") for i in range(40)]))
        wait_until(lambda: worker.worker._inflight >= 3, 60, what="three batches in flight")
        started = time.monotonic()
        worker.worker.request_stop()
        worker.thread.join(30)
        stopped_in = time.monotonic() - started
        assert not worker.thread.is_alive(), "the worker ignored the stop while the database was down"
    assert stopped_in < 25
    report = check_invariant(kafka_bootstrap, db_url, topics, worker.group_id)
    assert report.ok, report.summary()
    assert committed_total(kafka_bootstrap, worker.group_id, topics.raw) == 4  # the rest is re-read after restart


class _NotUtf8HeaderName(str):
    """A header name whose wire bytes are not UTF-8 (Kafka header names are bytes; a Go or Java producer can
    send any). kafka-python encodes names with ``str.encode``; this one answers with raw bytes."""

    def encode(self, *args, **kwargs) -> bytes:  # type: ignore[override]
        return b"\xff\xfe-trace"


def test_a_record_the_kafka_client_cannot_unpack_is_dead_lettered_not_a_crash_loop(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    """aiokafka raises UnicodeDecodeError unpacking a batch with such a header: before, out of getmany, the worker
    died, restarted at the same offset and died again, and the partition never moved.

    Three producer batches: [good], [bad, good], [good]. A batch is parsed from its start, so the good record
    after the bad one in its batch cannot be read either: both are dead-lettered with their coordinates, the
    other batches are stored, every offset is committed."""
    from kafka import KafkaProducer

    from streams.processing import describe_deadletter
    from tests.streams.harness import consume_all

    topics = make_topics(1)
    messages = [article(i, "hdr") for i in range(4)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    for batch in ([0], [1, 2], [3]):
        for i in batch:
            headers = [(_NotUtf8HeaderName("x"), b"1")] if i == 1 else [("trace", b"1")]
            producer.send(topics.raw, value=json.dumps(messages[i]).encode(), headers=headers)
        producer.flush(30)
    producer.close()
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics,
                             provider=StaticProvider(build_engine(load_settings().model, model_path)))
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 4
                   or not worker.thread.is_alive(), 120, what="4 committed")
    finally:
        worker.stop()  # raises the worker's own error if it died
    assert committed_total(kafka_bootstrap, worker.group_id, topics.raw) == 4
    assert Db(db_url).ids() == {messages[0]["id"], messages[3]["id"]}
    dead = [describe_deadletter(list(r.headers)) for r in consume_all(kafka_bootstrap, topics.deadletter, 2)]
    assert sorted((m["reason"], int(m["partition"]), int(m["offset"])) for m in dead) == [
        ("undecodable_record", 0, 1), ("undecodable_record", 0, 2)]
    assert all("UnicodeDecodeError" in m["detail"] for m in dead)


def test_the_lag_gauge_grows_while_the_worker_is_stalled(
    make_topics, kafka_bootstrap: str, db_url: str, pg_server, model_path: Path
) -> None:
    """During a database outage the backlog grows; before, the lag gauge stayed flat (the cached highwater stops
    moving once aiokafka holds unread records) and on-call saw a healthy-looking worker."""
    topics = make_topics(1)
    with _database_outage(kafka_bootstrap, db_url, pg_server, model_path, topics, "lagw") as worker:
        def lag() -> float:
            return worker.worker.metrics.registry.get_sample_value("marketmood_worker_lag", {"partition": "0"}) or 0.0

        produce(kafka_bootstrap, topics.raw, _values([article(i, "lagx") for i in range(400)]))
        wait_until(lambda: worker.worker._inflight >= 1, 60, what="a batch stuck on the database")
        produce(kafka_bootstrap, topics.raw, _values([article(i, "lagy") for i in range(600)]))
        seen = wait_until(lambda: lag() >= 900 and lag(), 30, what=f"the lag to show the backlog (at {lag()})")
    assert seen >= 900


def test_an_unpackable_record_on_one_partition_loses_nothing_fetched_from_another(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    """aiokafka's getmany drains the partitions one after the other and moves each one's position as it goes;
    when a later partition raises UnicodeDecodeError, the records already drained from an earlier one are never
    returned, yet their position has moved past them. Before, the isolation read on from there: those records
    were neither stored nor dead-lettered, and later commits went past them (lost)."""
    from kafka import KafkaProducer

    from streams.processing import describe_deadletter
    from tests.streams.harness import consume_all

    topics = make_topics(2)
    good = [article(i, "p0") for i in range(6)]
    after = article(0, "p1")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    for m in good:
        producer.send(topics.raw, value=json.dumps(m).encode(), partition=0, headers=[("trace", b"1")])
    producer.flush(30)
    producer.send(topics.raw, value=json.dumps(article(9, "bad")).encode(), partition=1,
                  headers=[(_NotUtf8HeaderName("x"), b"1")])
    producer.flush(30)
    producer.send(topics.raw, value=json.dumps(after).encode(), partition=1, headers=[("trace", b"1")])
    producer.flush(30)
    producer.close()
    later = article(6, "p0")  # sent once the bad record is dead-lettered: its commit must not skip p0's first six
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, batch_size=16,
                             provider=StaticProvider(build_engine(load_settings().model, model_path)))
    try:
        wait_until(lambda: committed_offsets(kafka_bootstrap, worker.group_id, topics.raw).get(1) == 2
                   or not worker.thread.is_alive(), 120, what="partition 1 committed")
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        producer.send(topics.raw, value=json.dumps(later).encode(), partition=0)
        producer.flush(30)
        producer.close()
        wait_until(lambda: committed_offsets(kafka_bootstrap, worker.group_id, topics.raw).get(0, 0) >= 7
                   or not worker.thread.is_alive(), 120, what="partition 0 committed")
    finally:
        worker.stop()
    # (the invariant checker's kafka-python reader cannot unpack the bad record either: checked by hand)
    assert committed_offsets(kafka_bootstrap, worker.group_id, topics.raw) == {0: 7, 1: 2}
    assert Db(db_url).ids() == {m["id"] for m in [*good, after, later]}
    dead = [describe_deadletter(list(r.headers)) for r in consume_all(kafka_bootstrap, topics.deadletter, 1)]
    assert [(m["reason"], int(m["partition"]), int(m["offset"])) for m in dead] == [("undecodable_record", 1, 0)]


def test_an_identical_copy_of_a_dead_lettered_record_in_its_batch_is_dead_lettered_too(
    make_topics, kafka_bootstrap: str, db_url: str, model_path: Path
) -> None:
    """A scraper (or a producer retry) sends the same article twice and both copies land in one batch: the copy is
    dropped as a duplicate because the first is scored. Before, when the first copy was then dead-lettered
    (a text that breaks the engine; a conflict with the stored version of the id), the copy had no outcome at all:
    dropped silently (the checker reports it lost), where in separate batches both were dead-lettered."""
    topics = make_topics(1)
    engine = build_engine(load_settings().model, model_path)
    original = article(1, "cp", title="Original headline about earnings")
    changed = dict(original, title="A different headline under the same id")
    poison = article(2, "cp", title="Poison headline that breaks the engine")
    good = article(3, "cp")
    produce(kafka_bootstrap, topics.raw, _values([original]))
    worker = InProcessWorker(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, batch_size=16,
                             provider=StaticProvider(FailsOnText(engine, "Poison headline")))
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 1, 120, what="original")
        produce(kafka_bootstrap, topics.raw, _values([changed, changed, poison, poison, good]))  # one batch
        wait_until(lambda: committed_total(kafka_bootstrap, worker.group_id, topics.raw) >= 6, 120, what="6 committed")
    finally:
        worker.stop()
    report = check_invariant(kafka_bootstrap, db_url, topics, worker.group_id)
    assert report.ok, report.summary()
    assert dict(report.dead_by_reason) == {"conflicting_duplicate": 2, "engine_error": 2} and report.stored == 2
    assert worker.worker.metrics.duplicates._value.get() == 0  # no copy was "scored once"


def test_sigterm_is_honoured_while_postgres_hangs(
    make_topics, kafka_bootstrap: str, db_url: str, tmp_path: Path, model_path: Path
) -> None:
    """PostgreSQL stops answering without closing anything (a frozen server, a black-holed network path): no
    statement_timeout fires and keepalives are answered, so a query waits for ever. Before: (1) the idle worker's
    best-effort progress refresh ("one attempt: a down database must not stop the fetching") waited for ever in
    the main loop, which never looked at the stop again; (2) once that was bounded, the worker drained and left
    its group but the process still did not exit: the interpreter joined the DB thread stuck in the query."""
    import time

    from tests.streams.harness import FreezableProxy

    topics = make_topics(1)
    group = f"mm-test-{topics.raw}"
    produce(kafka_bootstrap, topics.raw, _values([article(i, "hang") for i in range(4)]))
    proxy = FreezableProxy(db_url)
    worker = WorkerProcess(bootstrap=kafka_bootstrap, database_url=proxy.url, topics=topics, home=tmp_path / "home",
                           model_path=model_path, extra_env={"MARKETMOOD_WORKER__DRAIN_TIMEOUT_S": "10"})
    try:
        wait_until(lambda: committed_total(kafka_bootstrap, group, topics.raw) >= 4, 120,
                   what=f"warm-up\n{worker.log()[-3000:]}")
        proxy.freeze()
        time.sleep(12)  # two idle-progress periods (5 s): the second one writes, into the frozen database
        started = time.monotonic()
        code = worker.terminate(45)
        stopped_in = time.monotonic() - started
    finally:
        proxy.thaw()
        if worker.alive():
            worker.kill()
        proxy.close()
    assert code == 0, f"the worker ignored SIGTERM while PostgreSQL hung\n{worker.log()[-3000:]}"
    assert stopped_in < 40
    report = check_invariant(kafka_bootstrap, db_url, topics, group)
    assert report.ok, report.summary()
    assert report.stored == 4
