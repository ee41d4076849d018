"""The worker's database sink on real PostgreSQL: data errors are isolated, every other failure stalls.

Each fault is PostgreSQL's own: a CHECK constraint refusing an impossible sentiment, a read-only database
(what a failover to a replica looks like), a table lock held by another session (lock_timeout), and a
statement hung behind that lock (statement_timeout). The invariant in every case: a row is either stored
or handed back to be dead-lettered with a reason; a systemic fault hands nothing back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from storage.articles import ScoredArticle, write_scored_batch
from storage.db import make_engine
from storage.progress import PartitionProgress, read_progress
from streams.sinks import DatabaseSink


def _item(i: int, sentiment: str = "neutral", title: str | None = None, sha: str | None = None) -> ScoredArticle:
    return ScoredArticle(
        id=f"a{i}", title=title or f"Headline {i}", model_version="v1", topic="Markets", topic_confidence=0.9,
        sentiment=sentiment, p_negative=0.1, p_neutral=0.8, p_positive=0.1, score=0.0,
        published_at=datetime(2024, 5, 1, 12, i, tzinfo=timezone.utc), kafka_partition=0, kafka_offset=i,
        content_sha256=sha or f"sha-{i}",
    )


def _sink(db_url: str, *, pooled: bool = False, **engine_kwargs) -> tuple[DatabaseSink, list[str]]:
    retries: list[str] = []
    if not pooled:
        engine_kwargs["poolclass"] = NullPool
    engine = make_engine(db_url, **engine_kwargs)
    return DatabaseSink(engine, write_scored_batch, max_retry_delay_s=0.2,
                        on_retry=lambda kind, exc, n, d: retries.append(kind)), retries


def _ids(db_url: str, table: str = "articles", column: str = "id") -> list[str]:
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(f"SELECT {column} FROM {table} ORDER BY {column}")).scalars())
    finally:
        engine.dispose()


def _flush(sink: DatabaseSink, items: list[ScoredArticle], progress: list[PartitionProgress] | None = None,
           timeout_s: float = 60.0):
    for item in items:
        sink.add(item)
    for p in progress or []:
        sink.add_progress(p)
    return asyncio.run(asyncio.wait_for(sink.flush(), timeout_s))


def test_a_refused_row_is_isolated_and_the_rest_of_the_batch_is_committed(db_url) -> None:
    sink, retries = _sink(db_url)
    items = [_item(i, "furious" if i == 3 else "neutral") for i in range(6)]  # breaks ck_scores_sentiment
    progress = [PartitionProgress("news.raw", 0, 6, 10, datetime(2024, 5, 1, 12, 5, tzinfo=timezone.utc))]
    result = _flush(sink, items, progress)
    assert [(item.id, reason) for item, reason, _ in result.refused] == [("a3", "db_rejected")]
    assert "ck_scores_sentiment" in result.refused[0][2]
    assert sorted(i.id for i in result.stored) == ["a0", "a1", "a2", "a4", "a5"]
    assert _ids(db_url, "scores", "article_id") == ["a0", "a1", "a2", "a4", "a5"] and retries == []
    engine = make_engine(db_url, poolclass=NullPool)
    with engine.connect() as conn:
        assert [(p.partition, p.next_offset, p.log_end_offset) for p in read_progress(conn, "news.raw")] == [(0, 6, 10)]
    engine.dispose()


def test_same_id_with_other_content_in_a_later_batch_is_refused_as_a_conflict_replays_are_not(db_url) -> None:
    sink, _ = _sink(db_url)
    _flush(sink, [_item(1, sha="original")])
    replay = _flush(sink, [_item(1, sha="original")])
    conflict = _flush(sink, [_item(1, "negative", title="Another text", sha="changed")])
    assert replay.refused == [] and [i.id for i in replay.stored] == ["a1"]
    assert [(i.id, reason) for i, reason, _ in conflict.refused] == [("a1", "conflicting_duplicate")]
    engine = make_engine(db_url, poolclass=NullPool)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT title, content_sha256 FROM articles")).all() == [("Headline 1", "original")]
        assert conn.execute(text("SELECT sentiment FROM scores")).scalars().all() == ["neutral"]
    engine.dispose()


def _set_read_only(db_url: str, on: bool, *, disconnect: bool = False) -> None:
    name = make_url(db_url).database
    # the session itself must not inherit the read-only default it is about to lift
    admin = make_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                        connect_args={"options": "-c default_transaction_read_only=off"})
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'))
        if disconnect:  # a failover: every session is cut and reconnects to a (read-only) server
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    admin.dispose()


def test_a_read_only_database_stalls_the_batch_and_never_dead_letters_it(db_url) -> None:
    """A failover to a read-only server and back: the pooled connections opened during the read-only
    phase keep its default, so the sink must reconnect on a systemic error or it stalls forever."""
    sink, retries = _sink(db_url, pooled=True)
    _flush(sink, [_item(9)])  # the pool now holds a read-write connection
    _set_read_only(db_url, True, disconnect=True)
    released = threading.Timer(2.0, _set_read_only, (db_url, False))
    released.start()
    try:
        result = _flush(sink, [_item(i) for i in range(4)])
    finally:
        released.cancel()
        _set_read_only(db_url, False)
    assert result.refused == [] and len(result.stored) == 4
    assert retries and "systemic" in retries
    assert _ids(db_url) == ["a0", "a1", "a2", "a3", "a9"]
    sink.engine.dispose()


def _hold_table_lock(db_url: str, seconds: float, locked: threading.Event) -> None:
    engine = make_engine(db_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("LOCK TABLE articles IN ACCESS EXCLUSIVE MODE"))
        locked.set()
        time.sleep(seconds)
    engine.dispose()


@pytest.mark.parametrize("timeouts", [{"lock_timeout_ms": 300}, {"statement_timeout_ms": 400}],
                         ids=["lock_timeout", "statement_timeout"])
def test_a_lock_held_elsewhere_or_a_hung_statement_is_cancelled_and_retried_until_released(db_url, timeouts) -> None:
    """lock_timeout cancels the wait for a lock held by another session; statement_timeout cancels a
    statement hung for any reason (here: behind that lock). Both are transient: retried, then committed."""
    sink, retries = _sink(db_url, **timeouts)
    locked = threading.Event()
    holder = threading.Thread(target=_hold_table_lock, args=(db_url, 2.5, locked))
    holder.start()
    locked.wait(10)
    result = _flush(sink, [_item(i) for i in range(3)])
    holder.join()
    assert result.refused == [] and len(result.stored) == 3
    assert retries and set(retries) == {"transient"}


def test_two_copies_with_different_content_in_one_flush_first_write_wins(db_url) -> None:
    sink, _ = _sink(db_url)
    result = _flush(sink, [_item(2, sha="first"), _item(2, "negative", title="Second text", sha="second")])
    assert [(i.id, i.content_sha256) for i in result.stored] == [("a2", "first")]
    assert [(i.content_sha256, reason) for i, reason, _ in result.refused] == [("second", "conflicting_duplicate")]


def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    """The worker's one retry policy (database, broker, classifier): no test looked at the delays, so a retry
    loop with no back-off against a down database would have passed."""
    from streams.sinks import retry_forever

    failures = iter(range(5))
    delays: list[float] = []

    async def attempt() -> str:
        if next(failures, None) is not None:
            raise ConnectionError("down")
        return "ok"

    result = asyncio.run(retry_forever(attempt, retryable=lambda e: "transient", first_delay_s=0.001,
                                       max_delay_s=0.004, on_retry=lambda kind, exc, n, d: delays.append(d)))
    assert result == "ok" and delays == [0.001, 0.002, 0.004, 0.004, 0.004]
    async def broken() -> str:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):  # not retryable: raised at once, no retry recorded
        asyncio.run(retry_forever(broken, retryable=lambda e: None, on_retry=lambda *a: delays.append(-1)))
    assert -1 not in delays
