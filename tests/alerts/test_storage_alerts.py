"""storage.alerts on real PostgreSQL: aggregation counts novel articles once, lifecycle helpers, Grafana SQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from alerts import lifecycle
from storage import alerts as db
from tests.alerts.factories import BASE, W, article, insert, steady


def test_window_counts_novel_latest_version_and_replay(engine) -> None:
    items = steady("Macro", BASE, windows=2, per_window=4, neg_every=2, prefix="m")
    insert(engine, items)
    insert(engine, items)  # a replayed batch (Kafka redelivery) changes nothing
    # Syndicated copies of one negative story: only the first counts.
    copies = [article(f"syn-{k}", BASE + timedelta(seconds=10 + k), "Macro", "negative",
                      title=f"UPDATE {k}-Oil refinery explodes - Reuters") for k in range(5)]
    insert(engine, copies)
    # A second model version re-scores one article positive: the latest version counts, once.
    rescored = article("m-0-0", BASE + timedelta(seconds=37), "Macro", "positive")
    with engine.begin() as conn:
        conn.execute(text("UPDATE scores SET scored_at = scored_at - interval '1 hour'"))
        from dataclasses import replace

        from storage.articles import upsert_scored_batch
        upsert_scored_batch(conn, [replace(rescored, model_version="v2")])
        counts = db.window_counts(conn, "topic", BASE, BASE + timedelta(hours=1), W)
    start = int(BASE.timestamp())
    # window 0: 4 articles (m-0-0 now positive, m-0-2 negative, two neutral) + 1 novel syndicated copy
    w0 = counts["Macro"][start]
    assert w0[:3] == (2, 2, 1)
    assert w0[3] == pytest.approx(-0.85 + 0.85 - 0.85)
    assert counts["Macro"][start + W][:3] == (2, 2, 0)
    with engine.connect() as conn:
        novel = conn.execute(text("SELECT count(*) FROM articles WHERE id LIKE 'syn-%' AND novel")).scalar_one()
    assert novel == 1


def test_ticker_counts_and_top_headlines(engine) -> None:
    insert(engine, [
        article("a", BASE + timedelta(seconds=5), "Earnings", "negative", title="Acme profit collapses", tickers=("ACME", "XYZ")),
        article("b", BASE + timedelta(seconds=6), "Earnings", "neutral", title="Acme holds meeting", tickers=("ACME",)),
        article("c", BASE + timedelta(seconds=7), "Legal | Regulation", "negative", title="Acme sued", tickers=("ACME",)),
    ])
    with engine.connect() as conn:
        counts = db.window_counts(conn, "ticker", BASE, BASE + timedelta(minutes=5), W)
        assert sum(counts["ACME"][int(BASE.timestamp())][:3]) == 3 and sum(counts["XYZ"][int(BASE.timestamp())][:3]) == 1
        only = db.window_counts(conn, "ticker", BASE, BASE + timedelta(minutes=5), W, scopes=("XYZ",))
        assert set(only) == {"XYZ"}
        heads = db.top_negative_headlines(conn, "ticker", "ACME", BASE, BASE + timedelta(minutes=5), 5)
    # Equal scores: the newest first.
    assert [h["title"] for h in heads] == ["Acme sued", "Acme profit collapses"]
    assert heads[1]["url"] == "https://news.example.com/a" and heads[1]["score"] == -0.85


def _alert(conn, **kw):
    defaults = dict(rule="r", scope_type="topic", scope="Macro", severity="warning", state="firing",
                    dedup_key="k1", started_at=BASE, evidence={"current_share": 0.5, "baseline_share": 0.2, "volume": 12})
    defaults.update(kw)
    return db.insert_alert(conn, **defaults)


def test_ack_list_and_outbox(engine) -> None:
    with engine.begin() as conn:
        alert = _alert(conn)
        assert lifecycle.enqueue(conn, alert, ["hook", "pd"], "trigger") == 2
        assert lifecycle.enqueue(conn, alert, ["hook", "pd"], "trigger") == 0  # one notification per state change
        acked = lifecycle.acknowledge(conn, alert["id"], "ann")
        assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == "ann"
        again = lifecycle.acknowledge(conn, alert["id"], "bob")
        assert again["acknowledged_by"] == "ann"  # idempotent
        assert lifecycle.acknowledge(conn, 999_999, "ann") is None
        rows = db.list_outbox(conn, alert_id=alert["id"])
        assert sorted((r["notifier"], r["event"]) for r in rows) == [
            ("hook", "acknowledge"), ("hook", "trigger"), ("pd", "acknowledge"), ("pd", "trigger")]
        assert rows[-1]["payload"]["alert"]["acknowledged_by"] == "ann"
        # Resolve-before-trigger protection: only the trigger rows are due first.
        due = [db.claim_one(conn, BASE + timedelta(days=3650), "t") for _ in range(3)]
        assert due[2] is None
        assert {(r["notifier"], r["event"]) for r in due[:2]} == {("hook", "trigger"), ("pd", "trigger")}
        assert [a["id"] for a in db.list_alerts(conn, state="acknowledged")] == [alert["id"]]
        assert db.list_alerts(conn, state="resolved") == []
        assert len(db.list_alerts(conn, state="open")) == 1


def test_silences(engine) -> None:
    with engine.begin() as conn:
        s = db.create_silence(conn, "topic", "Macro", timedelta(hours=2), by="ann", reason="known", now=BASE)
        assert db.is_silenced(conn, "topic", "Macro", BASE + timedelta(hours=1))
        assert not db.is_silenced(conn, "topic", "Macro", BASE + timedelta(hours=3))
        assert not db.is_silenced(conn, "topic", "Markets", BASE + timedelta(hours=1))
        assert [x["id"] for x in db.list_silences(conn, active_at=BASE + timedelta(minutes=1))] == [s["id"]]
        assert db.cancel_silences(conn, silence_id=s["id"]) == 1
        assert not db.is_silenced(conn, "topic", "Macro", BASE + timedelta(hours=1))


def test_grafana_annotation_sql_runs(engine) -> None:
    with engine.begin() as conn:
        _alert(conn)
        _alert(conn, scope="Markets", dedup_key="k2", state="resolved", started_at=BASE + timedelta(hours=1))
        conn.execute(text("UPDATE alerts SET resolved_at = started_at + interval '40 minutes' WHERE scope = 'Markets'"))
        sql = db.GRAFANA_ANNOTATIONS_SQL.replace("$__timeFrom()", "'2024-01-01T00:00:00Z'::timestamptz").replace(
            "$__timeTo()", "'2024-01-03T00:00:00Z'::timestamptz")
        rows = conn.execute(text(sql)).mappings().all()
    assert len(rows) == 2
    first, second = rows
    assert first["time"] == pytest.approx(BASE.timestamp() * 1000)
    assert second["timeend"] - second["time"] == pytest.approx(40 * 60 * 1000)
    assert first["text"] == "WARNING topic Macro: 50% negative vs 20% baseline (n=12) [firing]"
    assert "topic:Markets" in second["tags"] and "resolved" in second["tags"]
