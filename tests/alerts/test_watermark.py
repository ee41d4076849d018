"""Windows are judged on complete data only: the alert service waits for the workers' committed event-time
watermark (``ingest_progress``, written here with ``storage.progress.record_progress`` as the worker does in
its batch transaction). Control: the same data judged by wall clock alone is judged while partial and the
burst is missed; with the watermark it fires once, at the right windows, after the workers catch up."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from alerts.config import AlertConfig
from alerts.rules import parse_rules
from alerts.service import AlertService
from storage import alerts as db
from storage.progress import PartitionProgress, record_progress
from tests.alerts.factories import BASE, W, article, insert, steady

TOPIC = "Energy | Oil"
RAW = "news.raw"


def _rules(name: str):
    return parse_rules({"rules": [{"name": name, "scope": {"type": "topic", "include": [TOPIC]},
                                   "severity": "warning", "detection": {"cooldown_minutes": 60}}]})


def _progress(engine, next_offset: int, log_end: int, max_event_time: datetime) -> None:
    with engine.begin() as conn:  # two partitions: the watermark is the slower one
        record_progress(conn, [PartitionProgress(RAW, 0, next_offset, log_end, max_event_time),
                               PartitionProgress(RAW, 1, 10_000, 10_000, max_event_time + timedelta(hours=2))])


def test_lagging_workers_hold_judging_until_the_window_is_complete(engine) -> None:
    burst_start = BASE + timedelta(hours=6)
    calm = steady(TOPIC, BASE, 72, per_window=6, neg_every=5, prefix="base")
    burst = [article(f"burst-{w}-{j}", burst_start + timedelta(seconds=w * W + 25 + j * 45), TOPIC,
                     "neutral" if j in (2, 5) else "negative", title=f"Refinery fire {w}-{j} hits output")
             for w in range(6) for j in range(6)]
    after = steady(TOPIC, burst_start + timedelta(minutes=30), 24, per_window=6, neg_every=5, prefix="after")
    cut = burst_start + timedelta(minutes=5)  # the workers have only committed up to here (a lag)
    insert(engine, calm + [a for a in burst if a.published_at < cut])
    _progress(engine, next_offset=500, log_end=900, max_event_time=cut - timedelta(seconds=1))

    lateness = 60
    gated = AlertService(engine, _rules("gated"), AlertConfig(window_s=W, late_grace_s=0, watermark_topic=RAW,
                                                              allowed_lateness_s=lateness))
    control = AlertService(engine, _rules("clock"), AlertConfig(window_s=W, late_grace_s=0))
    now = burst_start + timedelta(minutes=50)  # wall clock far past the burst; the data is not
    assert gated.evaluate(now) == [] and control.evaluate(now) == []
    with engine.connect() as conn:
        assert db.get_cursor(conn, "clock") == int(now.timestamp()) // W * W  # judged on partial data
        # gated: the last window whose end + lateness is behind the watermark (cut - 1 s)
        assert db.get_cursor(conn, "gated") == (int(cut.timestamp()) - 1 - lateness) // W * W
    lag = gated.metrics.registry.get_sample_value("marketmood_alert_watermark_lag_seconds")
    assert lag == pytest.approx((now - cut).total_seconds() + 1)

    # The workers catch up: the rest of the burst and what followed are committed, with the progress.
    insert(engine, [a for a in burst if a.published_at >= cut] + after)
    _progress(engine, next_offset=900, log_end=900, max_event_time=burst_start + timedelta(hours=2))
    changes = []
    t = now
    while t <= burst_start + timedelta(hours=2):
        changes += gated.evaluate(t) + control.evaluate(t)
        t += timedelta(seconds=W)
    with engine.connect() as conn:
        alerts = db.list_alerts(conn)
    assert [(a["rule"], a["state"]) for a in alerts] == [("gated", "resolved")]  # control missed the burst
    [alert] = alerts
    assert [c["state"] for c in changes] == ["firing", "resolved"]
    fired_at = datetime.fromisoformat(alert["evidence"]["fired_at"])
    assert burst_start < alert["started_at"] <= fired_at <= burst_start + timedelta(minutes=15)
    assert burst_start + timedelta(minutes=30) < alert["resolved_at"] <= burst_start + timedelta(hours=1)


def test_no_progress_yet_judges_nothing(engine) -> None:
    insert(engine, steady(TOPIC, BASE, 12, per_window=6, neg_every=5, prefix="x"))
    service = AlertService(engine, _rules("gated"), AlertConfig(window_s=W, late_grace_s=0, watermark_topic=RAW))
    assert service.evaluate(BASE + timedelta(hours=2)) == []
    with engine.connect() as conn:
        assert db.get_cursor(conn, "gated") is None  # not "judged as empty": not judged at all
