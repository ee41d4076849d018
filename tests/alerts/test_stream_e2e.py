"""The whole alert path on real services: articles published to tansu -> a real ``marketmood worker``
subprocess scores them with the bundled model into real PostgreSQL -> the alert service judges the stored
windows -> exactly one trigger and one resolve reach each notifier (HMAC webhook, Slack, PagerDuty, SMTP),
all real local receivers.

Time is controlled, not waited for: the articles' ``published_at`` lie hours in the past (a 2 h calm
baseline, a 30-min negative burst, an hour of calm after it) and ``AlertService.evaluate(now)`` walks an
explicit clock over them. The burst is about one company (ticker XOM) in one topic (oil), with headlines any
sane sentiment model scores negative; the rule watches tickers, which publishers set, so the scope does not
depend on the model's topic head. The model's sentiment is checked first, so a failure says whether the model
or the alert path is at fault.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from alerts.rules import parse_rules
from alerts.service import AlertService
from marketmood.settings import AlertSettings, TopicSettings
from storage import alerts as db
from storage.db import make_engine
from streams.novelty import story_key
from tests.alerts.factories import BURST, CALM, all_notifiers, assert_paged_once_then_resolved, headline_message
from tests.streams.harness import Db, WorkerProcess, produce, wait_until

SECRET = "e2e-secret-0123456789"
W = 300  # 5-minute windows, as in production
def scenario(base: datetime) -> tuple[list[dict], datetime, datetime]:
    """2 h calm (2 articles per window), a 30-min burst (6 per window, all bad news), 1 h calm."""
    msgs: list[dict] = []
    burst_start, burst_end = base + timedelta(hours=2), base + timedelta(hours=2, minutes=30)
    i = 0
    for w in range(int(timedelta(hours=3, minutes=30).total_seconds()) // W):
        start = base + timedelta(seconds=w * W)
        burst = burst_start <= start < burst_end
        per_window = 6 if burst else 2
        for j in range(per_window):
            t = start + timedelta(seconds=(j + 0.5) * W / per_window)
            pool, kind = (BURST, "burst") if burst else (CALM, "calm")
            msgs.append(headline_message(i, t, pool[i % len(pool)], kind))
            i += 1
    return msgs, burst_start, burst_end


def rules_for(http_recorder, smtp_recorder):
    return parse_rules({
        **all_notifiers(http_recorder, smtp_recorder, secret=SECRET, routing_key="rk-e2e", to="oncall@example.com"),
        "rules": [{"name": "ticker-spike", "scope": {"type": "ticker", "include": "all"}, "severity": "critical",
                   "detection": {"span_windows": 3, "baseline_hours": 2, "min_volume": 8, "min_baseline_volume": 30,
                                 "fire_p": 0.001, "min_delta": 0.2, "resolve_p": 0.05, "resolve_delta": 0.1,
                                 "resolve_after_windows": 2, "cooldown_minutes": 60}}],
    })


@pytest.mark.timeout(180)
def test_published_burst_fires_and_resolves_once_per_notifier(
    kafka_bootstrap: str, topic_names: TopicSettings, db_url: str, model_path: Path, tmp_path: Path,
    http_recorder, smtp_recorder,
) -> None:
    now = datetime.now(timezone.utc)
    base = datetime.fromtimestamp((int(now.timestamp()) // 3600 - 5) * 3600, tz=timezone.utc)  # 4-5 h ago
    msgs, burst_start, burst_end = scenario(base)
    assert len({story_key(m["title"]) for m in msgs}) == len(msgs)  # distinct stories: no syndicated copy

    # 1. Real worker, real broker: every article scored and stored.
    produce(kafka_bootstrap, topic_names.raw, msgs, keys=[m["id"].encode() for m in msgs])
    worker = WorkerProcess(bootstrap=kafka_bootstrap, database_url=db_url, topics=topic_names,
                           home=tmp_path / "worker", model_path=model_path, batch_size=32)
    store = Db(db_url)
    try:
        wait_until(lambda: store.articles() >= len(msgs), 120, what=f"{len(msgs)} stored articles")
    except AssertionError:
        raise AssertionError(worker.log()[-3000:]) from None
    finally:
        assert worker.terminate() == 0, worker.log()[-3000:]
        store.close()

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            stats = dict(conn.execute(text(
                "SELECT split_part(a.id, '-', 2), avg((s.sentiment = 'negative')::int)::float FROM articles a "
                "JOIN scores s ON s.article_id = a.id WHERE a.novel GROUP BY 1")).all())
            counts = Counter(dict(conn.execute(text(
                "SELECT split_part(id, '-', 2), count(*) FROM articles WHERE novel GROUP BY 1")).all()))
        assert counts == Counter(calm=sum(m["id"].startswith("e2e-calm") for m in msgs), burst=36), counts
        # 2. The model precondition: the burst reads as bad news, the calm period mostly does not.
        assert stats["burst"] >= 0.8, f"model scores only {stats['burst']:.0%} of the burst negative"
        assert stats["calm"] <= 0.3, f"model scores {stats['calm']:.0%} of the calm period negative"

        # 3. The alert service over the stored data, on an explicit clock.
        service = AlertService(engine, rules_for(http_recorder, smtp_recorder),
                               AlertSettings(window_s=W, late_grace_s=0, retry_base_s=1, retry_max_s=4),
                               plots_dir=tmp_path / "plots")
        changes = []
        t = base + timedelta(hours=1, minutes=30)
        while t <= base + timedelta(hours=3, minutes=30):
            changes += service.evaluate(t)
            service.deliver()
            t += timedelta(seconds=W)
        service.deliver()

        with engine.connect() as conn:
            alerts = db.list_alerts(conn, limit=10)
        assert [c["state"] for c in changes] == ["firing", "resolved"], changes
        assert len(alerts) == 1, alerts
        alert = alerts[0]
        assert (alert["scope_type"], alert["scope"], alert["state"]) == ("ticker", "XOM", "resolved")
        ev = alert["evidence"]
        fired_at = datetime.fromisoformat(ev["fired_at"])
        assert burst_start < fired_at <= burst_start + timedelta(minutes=15)
        assert burst_end < alert["resolved_at"] <= burst_end + timedelta(minutes=30)
        assert ev["current_share"] >= 0.5 and ev["baseline_share"] <= 0.3 and ev["volume"] >= 8
        assert ev["headlines"] and all("/burst/" in h["url"] for h in ev["headlines"])
        plots = list((tmp_path / "plots").glob(f"alert-{alert['id']}-*.png"))
        assert len(plots) == 1 and plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # 4. Exactly one trigger and one resolve per notifier, in order.
        paged = assert_paged_once_then_resolved(http_recorder, smtp_recorder, alert, secret=SECRET)
        assert paged["pd"][0]["routing_key"] == "rk-e2e" and "XOM" in paged["slack"][0]
        with engine.connect() as conn:
            outbox = db.list_outbox(conn, alert_id=alert["id"])
        assert sorted((r["notifier"], r["event"], r["status"]) for r in outbox) == sorted(
            (n, e, "delivered") for n in ("hook", "slack", "pd", "mail") for e in ("trigger", "resolve"))
    finally:
        engine.dispose()
