"""Scheduler: cron maths, the decision table, and ticks against a real PostgreSQL (drift, feedback, lock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from marketmood.settings import load_settings
from models.artifact import ArtifactInfo, write_info
from storage import feedback as feedback_sql
from storage import registry as registry_sql
from storage.db import make_engine
from tests.training.test_drift import CALM, insert_scores
from training import registry
from training.drift import DriftReport
from training.scheduler import Scheduler, decide, next_fire, validate_schedule

MONDAY_3AM = datetime(2026, 6, 1, 3, tzinfo=UTC)  # 2026-06-01 is a Monday


def test_default_schedule_is_weekly():
    settings = load_settings()
    first = next_fire(settings.retrain.schedule, datetime(2026, 5, 28, 12, tzinfo=UTC))
    assert first == MONDAY_3AM
    assert next_fire(settings.retrain.schedule, first) == MONDAY_3AM + timedelta(days=7)
    with pytest.raises(ValueError, match="invalid cron"):
        validate_schedule("every monday")


DRIFTED = DriftReport(True, ["sentiment PSI 0.500 > 0.2"])
CALM_REPORT = DriftReport(False, [])


def _decide(**kw):
    base = dict(now=MONDAY_3AM, schedule_due=False, new_feedback=0, min_new_feedback=50, drift=CALM_REPORT,
                last_retrain_at=None, drift_cooldown=timedelta(hours=24))
    return decide(**(base | kw))


def test_decision_table():
    assert _decide().reason == "not due" and not _decide().run
    skipped = _decide(schedule_due=True, new_feedback=49)
    assert not skipped.run and "49 new feedback rows < 50" in skipped.reason
    assert _decide(schedule_due=True, new_feedback=50) .trigger == "schedule"
    assert _decide(drift=DRIFTED).trigger == "drift"  # drift does not wait for feedback
    cooled = _decide(drift=DRIFTED, last_retrain_at=MONDAY_3AM - timedelta(hours=2))
    assert not cooled.run and "ignored" in cooled.reason
    assert _decide(drift=DRIFTED, last_retrain_at=MONDAY_3AM - timedelta(hours=25)).run
    # cooldown does not block a due scheduled run with enough feedback
    assert _decide(drift=DRIFTED, last_retrain_at=MONDAY_3AM - timedelta(hours=2), schedule_due=True,
                   new_feedback=60).trigger == "schedule"


@pytest.fixture
def engine(db_url, tmp_path):
    eng = make_engine(db_url)
    champion = tmp_path / "champ"
    write_info(champion, ArtifactInfo(version="v1", base_encoder="enc", max_length=64))
    registry.ensure_champion(eng, champion)
    yield eng
    eng.dispose()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _settings(tmp_path, **retrain):
    return load_settings(home=tmp_path, retrain={"min_new_feedback": 3, "drift_min_samples": 100,
                                                 "drift_reference_hours": 72, **retrain})


def test_tick_triggers_on_drift_and_skips_while_another_replica_holds_the_lock(engine, tmp_path):
    now = datetime.now(UTC)
    insert_scores(engine, start=now - timedelta(hours=96), hours=72, mix=CALM, confidence=0.8, prefix="ref")
    insert_scores(engine, start=now - timedelta(hours=24), hours=23,
                  mix={"negative": 200, "neutral": 80, "positive": 20}, confidence=0.8, prefix="rec")
    # The champion was promoted "now", which would reset the reference window: backdate the promotion.
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE model_aliases SET updated_at = now() - interval '10 days'")
    scheduler = Scheduler(engine, _settings(tmp_path), clock=Clock(now))
    with engine.connect() as other_replica:
        assert registry_sql.try_advisory_lock(other_replica)
        decision, outcome = scheduler.tick()
        registry_sql.advisory_unlock(other_replica)
    assert decision.run and decision.trigger == "drift" and "sentiment PSI" in decision.reason
    assert outcome is not None and outcome.status == "skipped" and "advisory lock" in outcome.reason
    with engine.connect() as conn:
        assert registry_sql.count_versions(conn) == 1  # nothing was trained or registered


def test_scheduled_tick_skips_with_too_little_new_feedback(engine, tmp_path):
    clock = Clock(MONDAY_3AM - timedelta(minutes=1))
    scheduler = Scheduler(engine, _settings(tmp_path), clock=clock)
    assert scheduler.next_due == MONDAY_3AM
    assert scheduler.tick()[0].reason == "not due"
    with engine.begin() as conn:
        for i in range(2):
            feedback_sql.insert_feedback(conn, article_id=None, text=f"t{i}", topic=None, sentiment="positive",
                                         author="ana")
    clock.now = MONDAY_3AM + timedelta(seconds=1)
    decision, outcome = scheduler.tick()
    assert not decision.run and outcome is None and "2 new feedback rows < 3" in decision.reason
    assert scheduler.next_due == MONDAY_3AM + timedelta(days=7)
