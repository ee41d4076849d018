"""Drift: PSI maths, the decision rules, and a synthetic shift read from a real scores table."""

from __future__ import annotations

import math

import pytest

from training.drift import DriftThresholds, decide_drift, psi

TH = DriftThresholds(psi=0.2, confidence_drop=0.1, min_samples=100)


def test_psi_is_zero_for_identical_distributions_and_symmetric_formula():
    assert psi({"a": 50, "b": 50}, {"a": 500, "b": 500}) == pytest.approx(0.0)
    # (q-p)ln(q/p) summed: 0.5->0.8 and 0.5->0.2
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi({"a": 50, "b": 50}, {"a": 80, "b": 20}) == pytest.approx(expected)


def test_psi_handles_a_label_missing_from_one_window():
    value = psi({"a": 100}, {"a": 50, "b": 50})
    assert math.isfinite(value) and value > 1.0


def test_no_verdict_with_too_few_samples():
    report = decide_drift({"sentiment": {"negative": 10}}, {"sentiment": {"positive": 10}}, 0.9, 0.5, TH)
    assert not report.drifted and "too few" in report.reasons[0]


def test_label_shift_triggers():
    ref = {"sentiment": {"negative": 100, "neutral": 300, "positive": 100}, "topic": {"Macro": 500}}
    rec = {"sentiment": {"negative": 350, "neutral": 100, "positive": 50}, "topic": {"Macro": 500}}
    report = decide_drift(ref, rec, 0.8, 0.8, TH)
    assert report.drifted
    assert report.psi["sentiment"] > 0.2 and report.psi["topic"] == 0
    assert report.reasons == [f"sentiment PSI {report.psi['sentiment']:.3f} > 0.2"]


def test_stable_distribution_does_not_trigger_but_confidence_drop_does():
    same = {"sentiment": {"negative": 100, "neutral": 300, "positive": 100}}
    assert not decide_drift(same, same, 0.80, 0.75, TH).drifted
    report = decide_drift(same, same, 0.85, 0.70, TH)
    assert report.drifted and "mean confidence fell" in report.reasons[0]


# ---------------------------------------------------------------- synthetic shift in a real scores table

from datetime import UTC, datetime, timedelta  # noqa: E402

from sqlalchemy import insert  # noqa: E402

from storage.db import make_engine  # noqa: E402
from storage.schema import Article, Score  # noqa: E402
from training.drift import check_drift  # noqa: E402

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def insert_scores(engine, *, start: datetime, hours: float, mix: dict[str, int], confidence: float,
                  version: str = "v1", prefix: str = "a") -> None:
    """Spread sum(mix) scores evenly over [start, start + hours) with the given sentiment mix."""
    labels = [label for label, n in mix.items() for _ in range(n)]
    step = timedelta(hours=hours) / len(labels)
    articles, scores = [], []
    for i, label in enumerate(labels):
        t = start + step * i
        rest = (1 - confidence) / 2
        p = {"negative": rest, "neutral": rest, "positive": rest} | {label: confidence}
        articles.append({"id": f"{prefix}{i}", "title": "t", "event_time": t})
        scores.append({"article_id": f"{prefix}{i}", "model_version": version, "topic": "Markets",
                       "topic_confidence": 0.6, "sentiment": label, "p_negative": p["negative"],
                       "p_neutral": p["neutral"], "p_positive": p["positive"],
                       "score": p["positive"] - p["negative"], "event_time": t})
    with engine.begin() as conn:
        conn.execute(insert(Article), articles)
        conn.execute(insert(Score), scores)


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


CALM = {"negative": 60, "neutral": 180, "positive": 60}


def test_check_drift_detects_a_synthetic_shift_in_recent_scores(engine):
    insert_scores(engine, start=NOW - timedelta(hours=24 * 4), hours=72, mix=CALM, confidence=0.8, prefix="ref")
    insert_scores(engine, start=NOW - timedelta(hours=24), hours=24,
                  mix={"negative": 200, "neutral": 80, "positive": 20}, confidence=0.8, prefix="rec")
    report = check_drift(engine, window=timedelta(hours=24), reference_window=timedelta(hours=72),
                         thresholds=TH, now=NOW, model_version="v1")
    assert report.drifted and report.psi["sentiment"] > 0.2
    assert report.samples == {"reference": 300, "recent": 300}


def test_check_drift_stays_quiet_on_the_same_distribution_and_sees_a_confidence_drop(engine):
    insert_scores(engine, start=NOW - timedelta(hours=24 * 4), hours=72, mix=CALM, confidence=0.85, prefix="ref")
    insert_scores(engine, start=NOW - timedelta(hours=24), hours=24, mix=CALM, confidence=0.82, prefix="rec")
    quiet = check_drift(engine, window=timedelta(hours=24), reference_window=timedelta(hours=72),
                        thresholds=TH, now=NOW, model_version="v1")
    assert not quiet.drifted and quiet.psi["sentiment"] == pytest.approx(0, abs=1e-3)
    # Another model version's scores never count as this one's drift.
    insert_scores(engine, start=NOW - timedelta(hours=24), hours=24, mix=CALM, confidence=0.5, version="v2",
                  prefix="other")
    assert not check_drift(engine, window=timedelta(hours=24), reference_window=timedelta(hours=72),
                           thresholds=TH, now=NOW, model_version="v1").drifted
    lower = check_drift(engine, window=timedelta(hours=24), reference_window=timedelta(hours=72),
                        thresholds=TH, now=NOW + timedelta(hours=24), model_version="v2")
    assert not lower.drifted and "too few" in lower.reasons[0]  # v2 has no reference window yet
