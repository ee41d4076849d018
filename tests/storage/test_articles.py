"""upsert_scored_batch: idempotency, first-write-wins, event time, novelty (syndication), speed; reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, select

from storage.articles import (
    ScoredArticle,
    articles_without_score,
    count_articles,
    count_scores,
    topic_summary,
    upsert_scored_batch,
)
from storage.db import make_engine
from storage.schema import Article, Score

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def item(article_id: str, *, t: datetime | None = T0, key: str | None = None, version: str = "v1", **kw: object) -> ScoredArticle:
    sentiment = str(kw.pop("sentiment", "negative"))
    probs = {"negative": (0.8, 0.15, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.15, 0.8)}[sentiment]
    return ScoredArticle(
        id=article_id,
        title=f"headline {article_id}",
        model_version=version,
        topic=str(kw.pop("topic", "earnings")),
        topic_confidence=0.9,
        sentiment=sentiment,
        p_negative=probs[0],
        p_neutral=probs[1],
        p_positive=probs[2],
        score=probs[2] - probs[0],
        published_at=t,
        story_key=key,
        tickers=kw.pop("tickers", ("AAPL", "MSFT")),
        kafka_partition=0,
        kafka_offset=int(kw.pop("offset", 0)),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _novel(engine: Engine) -> dict[str, bool]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Article.id, Article.novel)).all())


def test_insert_then_replay_same_batch_is_idempotent(engine: Engine) -> None:
    batch = [item(f"a{i}", offset=i) for i in range(50)]
    with engine.begin() as conn:
        first = upsert_scored_batch(conn, batch)
    with engine.begin() as conn:
        second = upsert_scored_batch(conn, batch)
    assert (first.articles_inserted, first.scores_inserted, first.duplicates) == (50, 50, 0)
    assert (second.articles_inserted, second.scores_inserted, second.duplicates) == (0, 0, 50)
    with engine.connect() as conn:
        assert count_articles(conn) == 50
        assert count_scores(conn) == 50
        assert articles_without_score(conn, "v1") == 0
        row = conn.execute(
            select(Article.tickers, Article.kafka_offset, Article.event_time).where(Article.id == "a7")
        ).one()
    assert row.tickers == ["AAPL", "MSFT"] and row.kafka_offset == 7 and row.event_time == T0


def test_odd_text_values_round_trip(engine: Engine) -> None:
    odd = ["BRK.B", 'QU"OTE', "back\\slash", "comma,brace}", "NULL", "ünï"]
    article = item("odd", tickers=odd, body=None, url="https://x/?a=1&b='2'")  # type: ignore[arg-type]
    with engine.begin() as conn:
        upsert_scored_batch(conn, [article, item("empty", tickers=())])  # type: ignore[arg-type]
    with engine.connect() as conn:
        stored = dict(conn.execute(select(Article.id, Article.tickers)).all())
        assert conn.execute(select(Article.url).where(Article.id == "odd")).scalar_one() == "https://x/?a=1&b='2'"
    assert stored == {"odd": odd, "empty": []}


def test_duplicate_id_inside_one_batch_keeps_the_first(engine: Engine) -> None:
    with engine.begin() as conn:
        result = upsert_scored_batch(conn, [item("x", topic="earnings"), item("x", topic="macro")])
    assert (result.articles_inserted, result.scores_inserted, result.duplicates) == (1, 1, 1)
    with engine.connect() as conn:
        assert conn.execute(select(Score.topic)).scalars().all() == ["earnings"]


def test_first_write_wins_and_new_model_version_adds_scores(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_scored_batch(conn, [item("a", t=T0), item("b", t=None)])
    # Redelivery with a different timestamp and a new model: articles untouched, v2 scores added.
    with engine.begin() as conn:
        result = upsert_scored_batch(conn, [item("a", t=T0 + timedelta(days=1), version="v2"), item("b", t=T0, version="v2")])
    assert (result.articles_inserted, result.scores_inserted, result.duplicates) == (0, 2, 2)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(Article.id, Article.event_time)).all())
        scores = conn.execute(select(Score.article_id, Score.model_version, Score.event_time)).all()
        assert count_scores(conn, "v2") == 2
    assert stored["a"] == T0
    assert stored["b"] > T0  # published_at unknown: event_time = now() of the first write
    assert all(t == stored[aid] for aid, _, t in scores), "scores carry the stored article's event time"


def test_missing_published_at_uses_transaction_time(engine: Engine) -> None:
    with engine.begin() as conn:
        before = conn.execute(select(Article.id)).all()
        upsert_scored_batch(conn, [item("n", t=None)])
        tx_now = conn.exec_driver_sql("SELECT now()").scalar_one()
        assert conn.execute(select(Article.event_time)).scalar_one() == tx_now
        assert conn.execute(select(Article.published_at)).scalar_one() is None
    assert before == []


def test_naive_timestamp_is_rejected(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="timezone-aware"):
        upsert_scored_batch(conn, [item("naive", t=datetime(2026, 1, 1))])


def test_novelty_within_one_batch_follows_event_time_not_arrival(engine: Engine) -> None:
    h = timedelta(hours=1)
    batch = [
        item("late_copy", t=T0 + h, key="fed-hikes"),  # arrives first but is the later copy
        item("original", t=T0, key="fed-hikes"),
        item("much_later", t=T0 + 8 * h, key="fed-hikes"),  # 7 h after the last copy: novel again
        item("same_time", t=T0, key="other"),
        item("same_time_2", t=T0, key="other"),  # tie: the earlier batch item wins
        item("no_key_1", t=T0, key=None),
        item("no_key_2", t=T0, key=None),
    ]
    with engine.begin() as conn:
        result = upsert_scored_batch(conn, batch)
    assert result.not_novel == 2
    assert _novel(engine) == {
        "late_copy": False,
        "original": True,
        "much_later": True,
        "same_time": True,
        "same_time_2": False,
        "no_key_1": True,
        "no_key_2": True,
    }


def test_novelty_across_batches_and_window_parameter(engine: Engine) -> None:
    h = timedelta(hours=1)
    with engine.begin() as conn:
        upsert_scored_batch(conn, [item("first", t=T0, key="k")])
    with engine.begin() as conn:
        upsert_scored_batch(conn, [item("copy_2h", t=T0 + 2 * h, key="k"), item("other_key", t=T0 + h, key="z")])
    with engine.begin() as conn:  # 1 h window: 5 h after the last stored copy is news again
        upsert_scored_batch(conn, [item("copy_7h", t=T0 + 7 * h, key="k")], novelty_window=h)
    with engine.begin() as conn:  # same instant as a stored copy: the stored one wins the tie
        upsert_scored_batch(conn, [item("copy_tie", t=T0, key="k")])
    with engine.begin() as conn:  # an earlier copy arriving late is novel (nothing stored before it)
        upsert_scored_batch(conn, [item("copy_early", t=T0 - 10 * h, key="k")])
    assert _novel(engine) == {
        "first": True,
        "copy_2h": False,
        "other_key": True,
        "copy_7h": True,
        "copy_tie": False,
        "copy_early": True,
    }
    with engine.connect() as conn:
        assert count_articles(conn, novel=False) == 2


def test_novelty_does_not_depend_on_which_batch_brought_which_copy(engine: Engine) -> None:
    """The later copy stored first, the earlier one in a later batch (another partition, a replay): before,
    both stayed novel and the story counted twice; in one batch only one did."""
    h = timedelta(hours=1)
    with engine.begin() as conn:
        upsert_scored_batch(conn, [item("late", t=T0 + h, key="k"), item("far", t=T0 + 8 * h, key="k"),
                                   item("tie", t=T0, key="t"), item("other", t=T0 + h, key="z")])
    with engine.begin() as conn:
        upsert_scored_batch(conn, [item("early", t=T0, key="k"), item("tie_late_arrival", t=T0, key="t")])
    with engine.begin() as conn:  # a replay of the same rows changes nothing
        upsert_scored_batch(conn, [item("late", t=T0 + h, key="k"), item("early", t=T0, key="k")])
    assert _novel(engine) == {
        "early": True, "late": False,  # demoted: an earlier copy lies within the window before it
        "far": True,  # 7 h after the last copy: news again (6 h window)
        "tie": True, "tie_late_arrival": False,  # same instant: the stored one keeps the tie
        "other": True,
    }


def test_concurrent_workers_see_each_others_copies(engine: Engine) -> None:
    """Two transactions scoring copies of one story: the advisory lock serialises them."""
    results: dict[str, object] = {}
    conn_a = engine.connect()
    trans_a = conn_a.begin()
    upsert_scored_batch(conn_a, [item("wire_a", t=T0, key="merger")])

    def second_worker() -> None:
        with engine.begin() as conn_b:
            results["b"] = upsert_scored_batch(conn_b, [item("wire_b", t=T0 + timedelta(minutes=5), key="merger")])

    thread = threading.Thread(target=second_worker)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "second writer must wait for the first one's story lock"
    trans_a.commit()
    conn_a.close()
    thread.join(10)
    assert not thread.is_alive()
    assert _novel(engine) == {"wire_a": True, "wire_b": False}


def test_ten_thousand_rows_are_written_with_a_constant_number_of_statements(engine: Engine) -> None:
    """Bulk, not per row: the statement count does not grow with the batch, and 10k rows take ~1 s.

    The wall-clock bound is loose on purpose (shared 2-core CI machines); the statement count is exact.
    """
    batch = [item(f"bulk{i}", t=T0 + timedelta(seconds=i), key=f"s{i % 3000}", offset=i) for i in range(10_000)]
    with engine.begin() as conn:  # warm the connection and statement caches
        upsert_scored_batch(conn, [item("warm")])
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    started = time.perf_counter()
    with engine.begin() as conn:
        result = upsert_scored_batch(conn, batch)
    elapsed = time.perf_counter() - started
    print(f"10k upsert: {elapsed:.3f} s, {len(statements)} statements")
    assert (result.articles_inserted, result.scores_inserted) == (10_000, 10_000)
    assert result.not_novel == 7_000  # 3000 keys, copies 1 s apart: only the first of each is novel
    assert len([s for s in statements if s.lstrip().upper().startswith("INSERT")]) == 2
    assert len(statements) <= 8
    assert elapsed < 10.0, f"10k-row upsert took {elapsed:.2f} s"


def test_topic_summary_counts_each_article_once(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_scored_batch(
            conn,
            [
                item("e1", topic="earnings", sentiment="negative"),
                item("e2", topic="earnings", sentiment="positive"),
                item("m1", topic="macro", sentiment="neutral"),
                item("old", t=T0 - timedelta(days=2), topic="macro", sentiment="negative"),
            ],
        )
    with engine.begin() as conn:  # v2 rescores e1 as positive: the latest score counts, not both
        upsert_scored_batch(conn, [item("e1", topic="earnings", sentiment="positive", version="v2")])
    with engine.connect() as conn:
        rows = topic_summary(conn, since=T0 - timedelta(hours=1))
        v1_rows = topic_summary(conn, since=T0 - timedelta(hours=1), model_version="v1")
    by_topic = {r.topic: r for r in rows}
    assert set(by_topic) == {"earnings", "macro"}
    assert (by_topic["earnings"].n, by_topic["earnings"].negative, by_topic["earnings"].positive) == (2, 0, 2)
    assert by_topic["earnings"].mean_score == pytest.approx(0.75)
    assert (by_topic["macro"].n, by_topic["macro"].neutral) == (1, 1)
    v1 = {r.topic: r for r in v1_rows}
    assert (v1["earnings"].negative, v1["earnings"].positive) == (1, 1)
    assert v1["earnings"].mean_score == pytest.approx(0.0)


def test_two_workers_writing_the_same_articles_in_opposite_orders_do_not_deadlock(engine: Engine) -> None:
    """The same articles reach two workers in different orders (re-published under other keys, other
    partitions): rows were inserted in Kafka order, so each transaction held unique-key entries the other was
    waiting for and PostgreSQL killed one (40P01; retried as transient, a wasted batch). Sorted by id now."""
    ids = [f"dl{i:04d}" for i in range(1500)]
    barrier, errors, results = threading.Barrier(2), [], []

    def worker(order: list[str]) -> None:
        try:
            with engine.begin() as conn:
                barrier.wait(timeout=10)
                results.append(upsert_scored_batch(conn, [item(i, key=None, tickers=()) for i in order]))
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(order,)) for order in (ids, ids[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(r.articles_inserted for r in results) == [0, len(ids)]
