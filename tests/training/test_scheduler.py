"""Scheduler: cron maths, the decision table, and ticks against a real PostgreSQL (drift asks for labels and
never retrains, the feedback minimum counts texts, the shadow stage is finished)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from marketmood.settings import load_settings
from models.artifact import ArtifactInfo, write_info
from storage import feedback as feedback_sql
from storage import labelling
from storage import registry as registry_sql
from storage.db import make_engine
from storage.schema import Article, Score
from tests.training.factories import CALM, insert_scores
from training import registry
from training.drift import DriftReport
from training.registry import ShadowCriteria, judge_shadow
from training.schedule import first_due, next_fire, previous_fire, validate_schedule
from training.scheduler import Scheduler, decide

MONDAY_3AM = datetime(2026, 6, 1, 3, tzinfo=UTC)  # 2026-06-01 is a Monday


def test_default_schedule_is_weekly():
    settings = load_settings()
    first = next_fire(settings.retrain.schedule, datetime(2026, 5, 28, 12, tzinfo=UTC))
    assert first == MONDAY_3AM
    assert next_fire(settings.retrain.schedule, first) == MONDAY_3AM + timedelta(days=7)
    with pytest.raises(ValueError, match="invalid cron"):
        validate_schedule("every monday")
    with pytest.raises(ValueError, match="never fires"):
        validate_schedule("0 3 31 2 *")  # February 31


def test_a_scheduler_started_after_a_fire_time_runs_it_unless_a_version_was_registered_since():
    weekly = "0 3 * * 1"
    assert previous_fire(weekly, MONDAY_3AM) == MONDAY_3AM  # a fire time is its own previous fire
    assert previous_fire(weekly, MONDAY_3AM - timedelta(seconds=1)) == MONDAY_3AM - timedelta(days=7)
    restarted = MONDAY_3AM + timedelta(hours=2)  # a deploy across Monday 03:00, or `--once` from an outside cron
    assert first_due(weekly, restarted, last_run=MONDAY_3AM - timedelta(days=3)) == MONDAY_3AM  # missed: run now
    assert first_due(weekly, restarted, last_run=MONDAY_3AM + timedelta(hours=1)) == MONDAY_3AM + timedelta(days=7)
    assert first_due(weekly, restarted, last_run=None) == MONDAY_3AM + timedelta(days=7)  # empty registry


DRIFTED = DriftReport(True, ["sentiment mix shifted"])
CALM_REPORT = DriftReport(False, [])


def _decide(**kw):
    base = dict(now=MONDAY_3AM, schedule_due=False, new_feedback=0, min_new_feedback=50, drift=CALM_REPORT,
                last_request_at=None, request_cooldown=timedelta(hours=24))
    return decide(**(base | kw))


def test_decision_table():
    assert _decide().reason == "not due" and not _decide().run
    skipped = _decide(schedule_due=True, new_feedback=49)
    assert not skipped.run and "49 newly labelled texts < 50" in skipped.reason
    assert _decide(schedule_due=True, new_feedback=50).trigger == "schedule"
    drift = _decide(drift=DRIFTED)
    assert not drift.run and drift.labelling_request and "labelling request" in drift.reason  # never retrains
    assert not _decide(drift=DRIFTED, last_request_at=MONDAY_3AM - timedelta(hours=2)).labelling_request
    assert _decide(drift=DRIFTED, last_request_at=MONDAY_3AM - timedelta(hours=25)).labelling_request
    due = _decide(drift=DRIFTED, schedule_due=True, new_feedback=60)
    assert due.trigger == "schedule" and due.labelling_request


def test_shadow_verdicts():
    criteria = ShadowCriteria(hours=24, min_scores=100, min_agreement=0.8, max_confidence_drop=0.05)
    good = {"pairs": 500, "sentiment_agreement": 0.9, "champion_confidence": 0.8, "shadow_confidence": 0.79}
    assert judge_shadow(good, elapsed_hours=30, criteria=criteria)["verdict"] == "ready"
    assert judge_shadow(good, elapsed_hours=3, criteria=criteria)["verdict"] == "waiting"
    assert judge_shadow(good | {"pairs": 50}, elapsed_hours=30, criteria=criteria)["verdict"] == "waiting"
    bad = judge_shadow(good | {"sentiment_agreement": 0.6}, elapsed_hours=3, criteria=criteria)
    assert bad["verdict"] == "failing" and "agreement 0.600" in bad["problems"][0]  # fails before the period
    unsure = judge_shadow(good | {"shadow_confidence": 0.7}, elapsed_hours=30, criteria=criteria)
    assert unsure["verdict"] == "failing" and "confidence" in unsure["problems"][0]


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
                                                 "drift_reference_weeks": 2, "labelling_request_size": 5,
                                                 "shadow_hours": 24, "shadow_min_scores": 3, **retrain})


def _seed_negative_drift(engine, now: datetime) -> None:
    """Two calm reference weeks, then a day whose sentiment mix turned negative: drift, by any threshold."""
    for week in (1, 2):
        insert_scores(engine, start=now - timedelta(hours=24, weeks=week), hours=24, mix=CALM, confidence=0.8,
                      prefix=f"ref{week}-")
    insert_scores(engine, start=now - timedelta(hours=24), hours=23,
                  mix={"negative": 200, "neutral": 80, "positive": 20}, confidence=0.8, prefix="rec")


def test_drift_opens_one_labelling_request_and_trains_nothing(engine, tmp_path):
    now = datetime.now(UTC)
    _seed_negative_drift(engine, now)
    clock = Clock(now)
    scheduler = Scheduler(engine, _settings(tmp_path), clock=clock)
    decision, outcome = scheduler.tick()
    assert not decision.run and outcome is None and decision.labelling_request
    clock.now = now + timedelta(minutes=5)
    again, _ = scheduler.tick()
    assert not again.labelling_request  # one request per drift window, not one per tick
    with engine.connect() as conn:
        (request,) = labelling.list_requests(conn)
        items = labelling.request_items(conn, request["id"])
        assert registry_sql.count_versions(conn) == 1  # nothing was trained or registered
    assert request["model_version"] == "v1" and len(items) == 5
    assert {it["sentiment"] for it in items} == {"negative"}


def test_scheduled_tick_counts_distinct_texts(engine, tmp_path):
    clock = Clock(MONDAY_3AM - timedelta(minutes=1))
    scheduler = Scheduler(engine, _settings(tmp_path), clock=clock)
    assert scheduler.next_due == MONDAY_3AM
    assert scheduler.tick()[0].reason == "not due"
    with engine.begin() as conn:
        for i in range(2):
            for author in ("ana", "bo", "cy"):  # 6 rows, 2 texts
                feedback_sql.insert_feedback(conn, article_id=None, text=f"t{i}", topic=None, sentiment="positive",
                                             author=author)
    clock.now = MONDAY_3AM + timedelta(seconds=1)
    decision, outcome = scheduler.tick()
    assert not decision.run and outcome is None and "2 newly labelled texts < 3" in decision.reason
    assert scheduler.next_due == MONDAY_3AM + timedelta(days=7)


def _shadow_scores(engine, start, agree: bool):
    with engine.begin() as conn:
        for i in range(4):
            t = start + timedelta(minutes=i)
            conn.execute(insert(Article).values(id=f"sh{i}", title="t", event_time=t))
            for version, sentiment in (("v1", "neutral"), ("v2", "neutral" if agree else "negative")):
                conn.execute(insert(Score).values(
                    article_id=f"sh{i}", model_version=version, topic="Macro", topic_confidence=0.8,
                    sentiment=sentiment, p_negative=0.1, p_neutral=0.8, p_positive=0.1, score=0.0, event_time=t))


@pytest.mark.parametrize("agree", [True, False])
def test_tick_promotes_a_shadow_after_its_period_or_rejects_it(engine, tmp_path, agree):
    with engine.begin() as conn:
        registry_sql.insert_version(conn, version="v2", artifact=b"x", artifact_sha256="s")
    registry.start_shadow(engine, "v2", by="retrain", reason="passed the gate")
    with engine.connect() as conn:
        started = registry_sql.alias_set_at(conn, registry_sql.SHADOW_ALIAS, "v2")
    _shadow_scores(engine, started + timedelta(minutes=1), agree)
    clock = Clock(started + timedelta(hours=1))
    scheduler = Scheduler(engine, _settings(tmp_path), clock=clock)
    scheduler.tick()
    with engine.connect() as conn:
        active = registry_sql.get_alias(conn)
        status = registry_sql.get_version(conn, "v2")["status"]
    if not agree:  # out of range: rejected at once, before the period ends
        assert scheduler.last_shadow["action"] == "rejected" and status == "rejected" and active == "v1"
        return
    assert scheduler.last_shadow["action"] == "none" and status == "shadow" and active == "v1"  # period not over
    clock.now = started + timedelta(hours=25)
    scheduler.tick()
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == "v2" and registry_sql.get_alias(conn, "shadow") is None
        assert registry_sql.get_version(conn, "v2")["status"] == "promoted"
    assert scheduler.last_shadow["action"] == "promoted" and scheduler.last_shadow["sentiment_agreement"] == 1.0


def test_two_replicas_that_see_the_same_drift_open_one_labelling_request(engine, db_url, tmp_path):
    """Replicas tick on the same interval: both read "no request yet" before either stored one, and analysts got
    the same texts twice. The check and the insert are one locked step, so the second replica opens none."""
    import threading

    now = datetime.now(UTC)
    _seed_negative_drift(engine, now)
    engines = [make_engine(db_url) for _ in range(2)]
    replicas = [Scheduler(eng, _settings(tmp_path), clock=Clock(now)) for eng in engines]
    barrier, errors = threading.Barrier(len(replicas)), []

    def tick(replica: Scheduler) -> None:
        barrier.wait()
        try:
            replica.tick()
        except Exception as exc:  # noqa: BLE001 - the test reports any crash
            errors.append(exc)

    threads = [threading.Thread(target=tick, args=(r,)) for r in replicas]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with engine.connect() as conn:
            assert len(labelling.list_requests(conn)) == 1
    finally:
        for eng in engines:
            eng.dispose()
