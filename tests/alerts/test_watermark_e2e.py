"""Judged on complete data, end to end in real time: a real ``marketmood worker`` (tansu + PostgreSQL, the
bundled model) is frozen (SIGSTOP) for ``PAUSE_S`` (120 s) while a scripted burst with real-time
``published_at`` is published; two alert services run meanwhile on the wall clock: one gated on the
workers' committed event-time watermark (``ingest_progress``, written by the worker in each batch
transaction), one on the wall clock alone (the old behaviour, the control). While the worker is frozen the
gated service judges nothing past the watermark; after SIGCONT it fires once, with the burst's window times.
The control judged the burst windows while they were still empty and misses it.

This test once failed about one run in five: on waking, the worker's idle progress check ran before its
fetcher had processed a response, took the pre-freeze highwater as "caught up, now", and moved the watermark
past the burst still waiting in Kafka, so the burst windows were judged empty. The deterministic version of
that fault is ``tests/streams/test_progress.py::test_a_stale_highwater_never_moves_the_watermark_past_records_still_in_kafka``.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from alerts.config import AlertConfig
from alerts.rules import parse_rules
from alerts.service import AlertService
from marketmood.settings import TopicSettings
from storage import alerts as db
from storage.db import make_engine
from storage.progress import event_time_watermark, read_progress
from tests.alerts.factories import BURST, CALM, alerts_of, headline_message
from tests.streams.harness import Db, WorkerProcess, produce, wait_until

W = 10  # 10-s windows: real time, so the test runs in minutes
PAUSE_S = float(os.environ.get("MARKETMOOD_TEST_PAUSE_S", "120"))


def _rules(name: str):
    return parse_rules({"rules": [{
        "name": name, "scope": {"type": "ticker", "include": ["XOM"]}, "severity": "warning",
        "detection": {"span_windows": 3, "baseline_hours": 0.1, "min_volume": 8, "min_baseline_volume": 20,
                      "fire_p": 0.001, "min_delta": 0.2, "resolve_delta": 0.1, "cooldown_minutes": 30}}]})


def _progress_rows(engine, topic: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM ingest_progress WHERE topic = :t"), {"t": topic}).scalar_one()


@pytest.mark.slow
@pytest.mark.timeout(int(PAUSE_S) + 300)
def test_burst_during_worker_pause_fires_once_after_resume(
    kafka_bootstrap: str, topic_names: TopicSettings, db_url: str, model_path: Path, tmp_path: Path,
) -> None:
    now = datetime.now(timezone.utc)
    start = datetime.fromtimestamp(int(now.timestamp()) // W * W, tz=timezone.utc) - timedelta(minutes=8)
    calm = [headline_message(i, start + timedelta(seconds=5 * i), CALM[i % len(CALM)], "calm") for i in range(96)]
    produce(kafka_bootstrap, topic_names.raw, calm, keys=[m["id"].encode() for m in calm])
    worker = WorkerProcess(bootstrap=kafka_bootstrap, database_url=db_url, topics=topic_names,
                           home=tmp_path / "worker", model_path=model_path, batch_size=16)
    store, engine = Db(db_url), make_engine(db_url)
    services: list[AlertService] = []
    try:
        wait_until(lambda: store.articles() >= len(calm), 120, what="the calm baseline stored")
        wait_until(lambda: _progress_rows(engine, topic_names.raw) > 0, 30,
                   what="ingest_progress rows from the worker (the worker must record its progress)")
        gated = AlertService(engine, _rules("gated"), AlertConfig(
            window_s=W, late_grace_s=0, allowed_lateness_s=2, watermark_topic=topic_names.raw,
            evaluate_interval_s=1, max_catchup_windows=500))
        control = AlertService(engine, _rules("clock"), AlertConfig(window_s=W, late_grace_s=0, evaluate_interval_s=1,
                                                                    max_catchup_windows=500))
        services = [gated, control]
        for s in services:
            s.start()

        os.killpg(worker.proc.pid, signal.SIGSTOP)  # the workers lag: nothing is committed from here on
        paused_at = time.monotonic()
        burst_start = datetime.fromtimestamp((int(time.time()) // W + 1) * W, tz=timezone.utc)
        while datetime.now(timezone.utc) < burst_start:
            time.sleep(0.05)
        i = 1000
        for w in range(6):  # 6 windows x 6 bad-news articles, published as they happen
            for j in range(6):
                m = headline_message(i, datetime.now(timezone.utc), BURST[i % len(BURST)], "burst")
                produce(kafka_bootstrap, topic_names.raw, [m], keys=[m["id"].encode()])
                i += 1
                time.sleep(W / 6 * 0.95)
        burst_end = burst_start + timedelta(seconds=6 * W)
        while time.monotonic() - paused_at < PAUSE_S:  # calm again, still frozen
            m = headline_message(i, datetime.now(timezone.utc), CALM[i % len(CALM)], "calm")
            produce(kafka_bootstrap, topic_names.raw, [m], keys=[m["id"].encode()])
            i += 1
            time.sleep(W / 2)
        with engine.connect() as conn:
            gated_cursor, clock_cursor = db.get_cursor(conn, "gated"), db.get_cursor(conn, "clock")
            assert db.list_alerts(conn) == []
        assert gated_cursor is not None and gated_cursor <= burst_start.timestamp()  # held at the watermark
        assert clock_cursor >= burst_end.timestamp()  # the control judged the (empty) burst windows

        stored_before = store.articles()
        os.killpg(worker.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        timeline: list[str] = []  # seconds after the resume: stored articles and the committed watermark

        def fired() -> bool:
            with engine.connect() as conn:
                mark = event_time_watermark(read_progress(conn, topic_names.raw), datetime.now(timezone.utc))
            timeline.append(f"{time.monotonic() - resumed:5.1f} s: {store.articles()} stored, watermark {mark}")
            return bool(alerts_of(engine))

        try:
            wait_until(fired, 120, what="the gated alert after the resume")
        except AssertionError as exc:  # say why: a worker that died or never caught up, or a missed burst
            with engine.connect() as conn:
                cursor = db.get_cursor(conn, "gated")
            raise AssertionError(
                f"{exc}\nworker alive: {worker.alive()}; {stored_before} articles stored at the resume, "
                f"{store.articles()} now of {len(calm) + i - 1000} published; gated cursor {cursor}, burst "
                f"{burst_start}..{burst_end}\n" + "\n".join(timeline[:12] + timeline[12::8])
                + f"\nworker log (tail):\n{worker.log()[-4000:]}") from None
        fired_after = time.monotonic() - resumed
        time.sleep(3 * W)  # a few more passes: nothing else may fire
        with engine.connect() as conn:
            alerts = db.list_alerts(conn)
        assert [(a["rule"], a["scope"]) for a in alerts] == [("gated", "XOM")], alerts
        alert = alerts[0]
        fired_at = datetime.fromisoformat(alert["evidence"]["fired_at"])
        assert burst_start < alert["started_at"] <= fired_at <= burst_end + timedelta(seconds=2 * W), alert
        lag = gated.metrics.registry.get_sample_value("marketmood_alert_watermark_lag_seconds")
        assert lag is not None and lag < PAUSE_S  # caught up again
        print(f"fired {fired_after:.1f} s after the resume; started_at {alert['started_at']}, fired_at {fired_at}, "
              f"burst {burst_start}..{burst_end}")
    finally:
        for s in services:
            s.stop()
        if worker.alive():
            os.killpg(worker.proc.pid, signal.SIGCONT)
        worker.terminate()
        store.close()
        engine.dispose()
