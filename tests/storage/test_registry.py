"""Registry SQL in a real PostgreSQL: versions, the active alias + history + NOTIFY, the advisory lock."""

from __future__ import annotations

import select as selectmod
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from storage import registry
from storage.db import make_engine
from storage.schema import Article, Score


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _add(conn, version, **kw):
    registry.insert_version(conn, version=version, artifact=b"bytes-" + version.encode(),
                            artifact_sha256="sha-" + version, **kw)


def test_versions_roundtrip_and_are_immutable(engine):
    with engine.begin() as conn:
        _add(conn, "v1", metrics={"dev": {"a": 1}}, data_fingerprint="fp1")
        _add(conn, "v2", parent_version="v1", report={"passed": True})
    with engine.connect() as conn:
        listing = registry.list_versions(conn)
        assert [v["version"] for v in listing] == ["v2", "v1"]
        assert "artifact" not in listing[0] and "report" not in listing[0]
        v2 = registry.get_version(conn, "v2")
        assert v2["parent_version"] == "v1" and v2["report"] == {"passed": True} and v2["status"] == "candidate"
        assert registry.get_artifact(conn, "v1") == (b"bytes-v1", "sha-v1")
        assert registry.get_artifact(conn, "nope") is None
        assert registry.count_versions(conn) == 2
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _add(conn, "v1")


def test_set_alias_records_history_statuses_and_notifies(engine):
    with engine.begin() as conn:
        _add(conn, "v1")
        _add(conn, "v2")
    listener = engine.raw_connection()
    try:
        listener.set_isolation_level(0)  # autocommit: LISTEN takes effect now
        cur = listener.cursor()
        cur.execute(f"LISTEN {registry.NOTIFY_CHANNEL}")
        with engine.begin() as conn:
            assert registry.set_alias(conn, "v1", by="ana", reason="first") is None
        with engine.begin() as conn:
            assert registry.set_alias(conn, "v2", by="bo", reason="promote") == "v1"
        pg = listener.driver_connection
        deadline = datetime.now() + timedelta(seconds=5)
        while len(pg.notifies) < 2 and datetime.now() < deadline:
            selectmod.select([pg], [], [], 0.2)
            pg.poll()
        payloads = [n.payload for n in pg.notifies]
    finally:
        listener.close()
    assert payloads == ['{"alias": "active", "version": "v1"}', '{"alias": "active", "version": "v2"}']
    with engine.connect() as conn:
        assert registry.get_alias(conn) == "v2"
        assert [(h["version"], h["changed_by"], h["reason"]) for h in registry.alias_history(conn)] == [
            ("v1", "ana", "first"), ("v2", "bo", "promote")]
        assert registry.get_version(conn, "v1")["status"] == "retired"
        assert registry.get_version(conn, "v2")["status"] == "promoted"


def test_alias_must_point_to_a_known_version(engine):
    with pytest.raises(IntegrityError), engine.begin() as conn:
        registry.set_alias(conn, "ghost", by=None, reason="x")


def test_advisory_lock_is_exclusive_across_connections(engine):
    with engine.connect() as a, engine.connect() as b:
        assert registry.try_advisory_lock(a)
        assert not registry.try_advisory_lock(b)
        registry.advisory_unlock(a)
        assert registry.try_advisory_lock(b)
        registry.advisory_unlock(b)


def test_retrain_bookkeeping_reads_training_config(engine):
    cutoff = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as conn:
        _add(conn, "boot")
        assert registry.last_feedback_cutoff(conn) is None
    with engine.begin() as conn:
        booted = registry.last_registered_at(conn)
        _add(conn, "r1", training_config={"retrain": {"feedback_until": cutoff.isoformat()}})
    with engine.connect() as conn:
        assert registry.last_feedback_cutoff(conn) == cutoff
        assert booted is not None and registry.last_registered_at(conn) > booted


def test_score_statistics_per_window_and_version(engine):
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for i, (sentiment, p_top, version, hours) in enumerate(
            [("negative", 0.9, "v1", 1), ("negative", 0.7, "v1", 2), ("positive", 0.8, "v1", 30), ("neutral", 0.5, "v2", 1)]
        ):
            conn.execute(insert(Article).values(id=f"a{i}", title="t", event_time=t0 + timedelta(hours=hours)))
            rest = (1 - p_top) / 2
            probs = {"negative": rest, "neutral": rest, "positive": rest} | {sentiment: p_top}
            conn.execute(insert(Score).values(
                article_id=f"a{i}", model_version=version, topic="Macro", topic_confidence=0.5, sentiment=sentiment,
                p_negative=probs["negative"], p_neutral=probs["neutral"], p_positive=probs["positive"],
                score=probs["positive"] - probs["negative"], event_time=t0 + timedelta(hours=hours)))
    with engine.connect() as conn:
        day = [(t0, t0 + timedelta(hours=24))]
        v1 = registry.window_stats(conn, windows=day, model_version="v1", low_confidence=0.5)
        assert (v1["sentiment"], v1["topic"], v1["n"]) == ({"negative": 2}, {"Macro": 2}, 2)
        assert v1["sentiment_confidence"] == pytest.approx(0.8) and v1["topic_confidence"] == pytest.approx(0.5)
        assert v1["low_confidence"] == 0  # topic confidence 0.5 is not below 0.5
        both = registry.window_stats(conn, windows=day + [(t0 + timedelta(hours=29), t0 + timedelta(hours=31))],
                                     model_version="v1", low_confidence=0.75)
        assert both["sentiment"] == {"negative": 2, "positive": 1} and both["low_confidence"] == 3
        assert registry.window_stats(conn, windows=[], model_version="v1", low_confidence=0.5)["n"] == 0


def _score(conn, article_id, version, sentiment, p_top, t, topic="Macro"):
    rest = (1 - p_top) / 2
    probs = {"negative": rest, "neutral": rest, "positive": rest} | {sentiment: p_top}
    conn.execute(insert(Score).values(
        article_id=article_id, model_version=version, topic=topic, topic_confidence=0.7, sentiment=sentiment,
        p_negative=probs["negative"], p_neutral=probs["neutral"], p_positive=probs["positive"],
        score=probs["positive"] - probs["negative"], event_time=t))


def test_shadow_alias_keeps_its_scores_out_of_current_scores_until_promoted(engine):
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    with engine.begin() as conn:
        _add(conn, "champ")
        _add(conn, "challenger")
        _add(conn, "older-shadow")
        registry.set_alias(conn, "champ", by="t", reason="first")
        registry.set_alias(conn, "older-shadow", alias=registry.SHADOW_ALIAS, by="t", reason="gate")
        registry.set_alias(conn, "challenger", alias=registry.SHADOW_ALIAS, by="t", reason="gate")
        for i in range(4):
            conn.execute(insert(Article).values(id=f"s{i}", title="t", event_time=t0 + timedelta(minutes=i)))
            _score(conn, f"s{i}", "champ", "neutral", 0.8, t0 + timedelta(minutes=i))
            _score(conn, f"s{i}", "challenger", "neutral" if i < 3 else "negative", 0.7, t0 + timedelta(minutes=i))
    window = {"t_from": t0, "t_to": t0 + timedelta(hours=1)}
    current = "SELECT DISTINCT model_version FROM current_scores(:t_from, :t_to)"
    with engine.connect() as conn:
        assert registry.get_version(conn, "challenger")["status"] == "shadow"
        assert registry.get_version(conn, "older-shadow")["status"] == "candidate"  # replaced before promotion
        assert registry.get_alias(conn) == "champ"
        assert conn.execute(text(current), window).scalars().all() == ["champ"]
        pairs = registry.shadow_pairs(conn, shadow="challenger", champion="champ", start=t0, end=t0 + timedelta(hours=1))
        assert registry.alias_set_at(conn, registry.SHADOW_ALIAS, "challenger") is not None
    assert pairs["pairs"] == 4 and pairs["shadow_scores"] == 4
    assert pairs["sentiment_agreement"] == pytest.approx(0.75) and pairs["topic_agreement"] == pytest.approx(1.0)
    assert pairs["shadow_confidence"] == pytest.approx(0.7) and pairs["champion_confidence"] == pytest.approx(0.8)
    with engine.begin() as conn:
        assert registry.clear_alias(conn, registry.SHADOW_ALIAS, by="t", reason="promoted") == "challenger"
        registry.set_alias(conn, "challenger", by="t", reason="shadow passed")
    with engine.connect() as conn:
        assert registry.get_alias(conn, registry.SHADOW_ALIAS) is None
        assert conn.execute(text(current), window).scalars().all() == ["challenger"]
        assert registry.get_version(conn, "champ")["status"] == "retired"
        history = [(h["version"], h["reason"]) for h in registry.alias_history(conn, registry.SHADOW_ALIAS)]
    assert history[-1] == ("challenger", "cleared: promoted")


def test_listener_is_detached_from_the_pool_and_receives_alias_moves(db_url):
    import select

    from sqlalchemy import create_engine

    from storage import registry as registry_sql

    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    try:
        listener = registry_sql.open_listener(engine)
        # The pool's only connection is free again: the listener does not hold (or later return) it.
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
            conn.exec_driver_sql(f"NOTIFY {registry_sql.NOTIFY_CHANNEL}, 'v2'")
            conn.commit()
        driver = listener
        ready, _, _ = select.select([driver], [], [], 5.0)
        assert ready
        driver.poll()
        assert [n.payload for n in driver.notifies] == ["v2"]
        listener.close()
    finally:
        engine.dispose()


def _concurrently(*steps_per_thread) -> list[BaseException]:
    """Run each list of steps in its own thread and transaction, the threads meeting at a barrier after their first
    step (given up after 5 s: a thread held back by a lock never gets there). Returns the errors raised."""
    import threading

    barrier, errors = threading.Barrier(len(steps_per_thread)), []

    def run(engine, steps) -> None:
        try:
            with engine.begin() as conn:
                steps[0](conn)
                try:
                    barrier.wait(timeout=5)
                except threading.BrokenBarrierError:
                    pass
                for step in steps[1:]:
                    step(conn)
        except Exception as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=args) for args in steps_per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_alias_moves_taking_row_locks_in_opposite_orders_do_not_deadlock(engine):
    """A shadow verdict locks the shadow alias, then the active one; `models promote` the active one, then the
    shadow one (set_alias): run at the same moment, PostgreSQL killed one with a deadlock (40P01)."""
    with engine.begin() as conn:
        for v in ("a", "b"):
            _add(conn, v)
        registry.set_alias(conn, "a", by="t", reason="r")
        registry.set_alias(conn, "b", alias=registry.SHADOW_ALIAS, by="t", reason="r")
    errors = _concurrently(
        (engine, [lambda c: registry.get_alias(c, registry.SHADOW_ALIAS, for_update=True),
                  lambda c: registry.get_alias(c, for_update=True)]),
        (engine, [lambda c: registry.get_alias(c, for_update=True),
                  lambda c: registry.get_alias(c, registry.SHADOW_ALIAS, for_update=True)]),
    )
    assert not errors, errors


def test_two_first_promotions_leave_one_promoted_version(engine):
    """No active alias yet: FOR UPDATE locked no row, so both promotions read "no previous" and both versions
    ended "promoted" (the loser then counted as served)."""
    with engine.begin() as conn:
        for v in ("x", "y"):
            _add(conn, v)

    def promote(version):
        return [lambda c: registry.set_alias(c, version, by="t", reason="r"), lambda c: None]

    assert not _concurrently((engine, promote("x")), (engine, promote("y")))
    with engine.connect() as conn:
        statuses = {v: registry.get_version(conn, v)["status"] for v in ("x", "y")}
        active = registry.get_alias(conn)
    assert statuses[active] == "promoted" and sorted(statuses.values()) == ["promoted", "retired"], statuses
