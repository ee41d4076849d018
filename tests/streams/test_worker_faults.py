"""Failure behaviour of the worker: poison messages, SIGKILL, a PostgreSQL outage, SIGTERM.

Invariant checked throughout: offsets are committed only for messages whose rows are committed
(``committed offsets <= rows``), and after recovery every valid message has exactly one row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from marketmood.settings import TopicSettings
from storage.embedded import EmbeddedPostgres
from streams.processing import describe_deadletter
from tests.streams.harness import (
    Db,
    WorkerProcess,
    article,
    committed_total,
    consume_all,
    produce,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


def _start(kafka_bootstrap: str, db_url: str, topics: TopicSettings, tmp_path: Path, model_path: Path | None,
           **kw) -> WorkerProcess:
    return WorkerProcess(bootstrap=kafka_bootstrap, database_url=db_url, topics=topics, home=tmp_path / "home",
                         model_path=model_path, app_id=f"mm-test-{topics.raw}", **kw)


def _publish(kafka_bootstrap: str, topics: TopicSettings, start: int, stop: int) -> list[str]:
    msgs = [article(i) for i in range(start, stop)]
    produce(kafka_bootstrap, topics.raw, msgs, keys=[m["id"].encode() for m in msgs])
    return [m["id"] for m in msgs]


def test_poison_messages_are_dead_lettered_and_the_stream_keeps_flowing(
    kafka_bootstrap: str, db_url: str, topic_names: TopicSettings, tmp_path: Path, model_path: Path | None
) -> None:
    big_body = "x" * 1_000_000
    poison: list[tuple[bytes, str | None]] = [  # value, expected dead-letter reason (None = accepted)
        (b'{"id": "p-json", "title": "broken', "invalid_json"),
        (b"\xff\xfe\x00not utf-8", "not_utf8"),
        (json.dumps({"id": "p-notitle", "source": "x"}).encode(), "invalid_fields"),
        (json.dumps({"id": "p-empty", "title": "   "}).encode(), "invalid_fields"),
        (json.dumps({"id": 12345, "title": "Numeric id"}).encode(), "invalid_fields"),
        (json.dumps({"id": "p-tick", "title": "Tickers as string", "tickers": "AAPL"}).encode(), "invalid_fields"),
        (json.dumps({"id": "p-naive", "title": "Naive time", "published_at": "2024-05-01T10:00:00"}).encode(),
         "invalid_fields"),
        (json.dumps(["not", "an", "object"]).encode(), "not_an_object"),
        (json.dumps({"id": "p-big", "title": "Huge body accepted and truncated", "body": big_body}).encode(), None),
        (json.dumps({"id": "p-extra", "title": "Unknown fields are ignored", "sentiment_hint": 1,
                     "nested": {"a": [1, 2]}}).encode(), None),
    ]
    valid_before = [article(i, prefix="v") for i in range(10)]
    valid_after = [article(i, prefix="w") for i in range(10)]
    values = [json.dumps(m).encode() for m in valid_before] + [v for v, _ in poison]
    values += [json.dumps(m).encode() for m in valid_after]
    produce(kafka_bootstrap, topic_names.raw, values)
    expected_dead = [(v, r) for v, r in poison if r is not None]
    n_rows = len(valid_before) + len(valid_after) + 2

    worker = _start(kafka_bootstrap, db_url, topic_names, tmp_path, model_path)
    db = Db(db_url)
    try:
        wait_until(lambda: db.articles() >= n_rows, 120, what=f"rows\n{worker.log()[-3000:]}")
        dead = consume_all(kafka_bootstrap, topic_names.deadletter, len(expected_dead), timeout_s=30)
        scored = consume_all(kafka_bootstrap, topic_names.scored, n_rows, timeout_s=30)
        assert worker.terminate() == 0
    finally:
        worker.kill()

    assert db.articles() == n_rows == db.scores()
    ids = db.ids()
    assert {"p-big", "p-extra"} <= ids
    assert len(db.scalar("SELECT body FROM articles WHERE id = 'p-big'")) == 100_000  # truncated, documented
    assert {json.loads(r.value)["id"] for r in scored} == ids
    # every poison message is dead-lettered once, with its original bytes, reason and source position
    assert len(dead) == len(expected_dead)
    by_value = {r.value: describe_deadletter(list(r.headers)) for r in dead}
    for value, reason in expected_dead:
        meta = by_value[value]
        assert meta["reason"] == reason, (value, meta)
        assert meta["topic"] == topic_names.raw and meta["detail"]
        assert int(meta["partition"]) in (0, 1) and int(meta["offset"]) >= 0 and meta["time"]
    naive = by_value[expected_dead[6][0]]
    assert "timezone" in naive["detail"]
    assert len(dead) + n_rows == len(values)  # counts add up
    db.close()


def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka_bootstrap: str, db_url: str, topic_names: TopicSettings, tmp_path: Path, model_path: Path | None
) -> None:
    total = 600
    ids = _publish(kafka_bootstrap, topic_names, 0, total)
    group = f"mm-test-{topic_names.raw}"
    db = Db(db_url)
    worker = _start(kafka_bootstrap, db_url, topic_names, tmp_path, model_path, batch_size=4)
    try:
        wait_until(lambda: db.articles() >= 20, 120, interval_s=0.05, what=f"first rows\n{worker.log()[-3000:]}")
        worker.kill()  # SIGKILL: no drain, no final commit
    finally:
        worker.kill()
    at_kill = db.articles()
    assert at_kill < total, "the worker finished before it could be killed mid-stream"
    # the commit boundary: no offset was committed for a message whose row is not committed
    assert committed_total(kafka_bootstrap, group, topic_names.raw) <= at_kill

    worker = _start(kafka_bootstrap, db_url, topic_names, tmp_path, model_path, batch_size=32)
    try:
        wait_until(lambda: db.articles() >= total, 180, what=f"all rows\n{worker.log()[-3000:]}")
        time.sleep(1.0)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    assert db.articles() == total == db.scores()
    assert db.ids() == set(ids)
    assert db.scalar("SELECT count(*) FROM (SELECT article_id FROM scores GROUP BY article_id HAVING count(*) > 1) d") == 0
    db.close()


def test_postgres_outage_backs_off_and_catches_up(
    kafka_bootstrap: str, db_url: str, pg_server: EmbeddedPostgres, topic_names: TopicSettings, tmp_path: Path,
    model_path: Path | None,
) -> None:
    first = _publish(kafka_bootstrap, topic_names, 0, 50)
    group = f"mm-test-{topic_names.raw}"
    db = Db(db_url)
    worker = _start(kafka_bootstrap, db_url, topic_names, tmp_path, model_path)
    try:
        wait_until(lambda: db.articles() >= 50, 120, what=f"first rows\n{worker.log()[-3000:]}")
        pg_server.stop()
        try:
            second = _publish(kafka_bootstrap, topic_names, 50, 150)
            time.sleep(20)
            assert worker.alive(), worker.log()[-3000:]
            assert "database failed; retrying" in worker.log()
        finally:
            pg_server.start()
        wait_until(lambda: db.try_articles() >= 150, 120, what=f"catch-up\n{worker.log()[-3000:]}")
        time.sleep(1.5)  # let an offset commit happen
        assert committed_total(kafka_bootstrap, group, topic_names.raw) <= db.articles()
        assert worker.terminate() == 0
    finally:
        worker.kill()
    assert db.ids() == set(first) | set(second)
    assert db.articles() == 150 == db.scores()
    db.close()


def test_sigterm_drains_the_current_batch_and_exits_cleanly(
    kafka_bootstrap: str, db_url: str, topic_names: TopicSettings, tmp_path: Path, model_path: Path | None
) -> None:
    total = 400
    ids = _publish(kafka_bootstrap, topic_names, 0, total)
    group = f"mm-test-{topic_names.raw}"
    db = Db(db_url)
    worker = _start(kafka_bootstrap, db_url, topic_names, tmp_path, model_path, batch_size=16)
    try:
        wait_until(lambda: db.articles() >= 16, 120, interval_s=0.05, what=f"first rows\n{worker.log()[-3000:]}")
        started = time.monotonic()
        code = worker.terminate(timeout_s=30)
        elapsed = time.monotonic() - started
    finally:
        worker.kill()
    assert code == 0, worker.log()[-3000:]
    assert elapsed < 30
    log = worker.log()
    assert "worker stopped" in log
    at_exit = db.articles()
    # everything acked was written; nothing written was left un-committed beyond one batch
    committed = committed_total(kafka_bootstrap, group, topic_names.raw)
    assert committed <= at_exit
    assert at_exit - committed <= 16, (at_exit, committed)
    # a restart finishes the stream with no duplicates
    worker = _start(kafka_bootstrap, db_url, topic_names, tmp_path, model_path, batch_size=32)
    try:
        wait_until(lambda: db.articles() >= total, 180, what=f"all rows\n{worker.log()[-3000:]}")
        assert worker.terminate() == 0
    finally:
        worker.kill()
    assert db.ids() == set(ids) and db.scores() == total
    db.close()


def test_sigterm_while_a_batch_waits_for_the_database_drains_that_batch(
    kafka_bootstrap: str, db_url: str, pg_server: EmbeddedPostgres, topic_names: TopicSettings, tmp_path: Path,
    model_path: Path | None,
) -> None:
    """Deterministic drain: the batch is provably in flight (stuck on the DB) when SIGTERM arrives."""
    first = _publish(kafka_bootstrap, topic_names, 0, 8)
    group = f"mm-test-{topic_names.raw}"
    db = Db(db_url)
    worker = _start(kafka_bootstrap, db_url, topic_names, tmp_path, model_path, batch_size=8)
    try:
        wait_until(lambda: db.articles() >= 8, 120, what=f"first rows\n{worker.log()[-3000:]}")
        pg_server.stop()
        try:
            second = _publish(kafka_bootstrap, topic_names, 8, 16)
            wait_until(lambda: "database failed; retrying" in worker.log(), 60, what="a retrying batch")
            worker.proc.send_signal(15)
            wait_until(lambda: "stopping: draining batches in flight" in worker.log(), 20, what="SIGTERM handling")
            time.sleep(2.0)
            assert worker.alive(), "the worker exited without finishing its batch"
        finally:
            pg_server.start()
        code = worker.proc.wait(40)
    finally:
        worker.kill()
    assert code == 0, worker.log()[-3000:]
    assert db.ids() == set(first) | set(second)
    # the drained batch was acknowledged and its offsets committed before exit: a restart re-reads nothing
    assert committed_total(kafka_bootstrap, group, topic_names.raw) == 16
    db.close()
