"""Drift of the active model's inputs: a size-aware test on matching weekday/hour windows.

Why this shape:
* News has a weekly rhythm (earnings mornings, quiet weekends), so the recent window is compared with the
  same weekday and hours of the preceding ``reference_weeks`` weeks, never with "the last 7 days".
* A fixed PSI threshold fires on noise at low volume and misses real shifts at high volume. Instead each
  label distribution gets a chi-square test of homogeneity (its p-value accounts for both window sizes)
  AND must move by at least ``min_effect`` in total variation (half the L1 distance of the shares), so a
  huge volume does not turn a trivial wobble into an alarm. A 10-point class-share shift has TV 0.10.
* Beside the sentiment and topic mix: mean sentiment confidence, mean topic confidence and the share of
  low-confidence scores (a two-proportion chi-square plus the same effect floor).
Only one model version's scores count, so a model change never looks like drift. Drift opens a labelling
request (the uncertain texts of the drifted slice); it does not retrain and pages nobody.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from scipy.stats import chi2_contingency
from sqlalchemy.engine import Engine

from storage import labelling as labelling_sql
from storage import registry as sql


@dataclass(frozen=True)
class DriftThresholds:
    alpha: float = 0.01  # false-alarm rate of each test under no shift
    min_effect: float = 0.05  # total variation (label mix) or absolute share (low confidence)
    confidence_drop: float = 0.1
    min_samples: int = 200
    low_confidence: float = 0.5


@dataclass(frozen=True)
class ShiftTest:
    statistic: float
    p_value: float
    effect: float  # total variation distance between the two label distributions
    rising: list[str]  # labels whose share grew most (the drifted slice)


@dataclass(frozen=True)
class DriftReport:
    drifted: bool
    reasons: list[str] = field(default_factory=list)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    confidence: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    slice: dict[str, Any] = field(default_factory=dict)  # {"column": ..., "labels": [...]} to label first


def shift_test(reference: Mapping[str, int], recent: Mapping[str, int]) -> ShiftTest:
    """Chi-square test of homogeneity between two label histograms, with the TV distance and rising labels."""
    labels = sorted(set(reference) | set(recent))
    table = np.array([[reference.get(label, 0) for label in labels], [recent.get(label, 0) for label in labels]],
                     dtype=float)
    keep = table.sum(axis=0) > 0
    table, labels = table[:, keep], [lbl for lbl, k in zip(labels, keep, strict=True) if k]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return ShiftTest(0.0, 1.0, 0.0, [])
    stat, p_value, _, _ = chi2_contingency(table, correction=False)
    shares = table / table.sum(axis=1, keepdims=True)
    delta = shares[1] - shares[0]
    rising = [labels[i] for i in np.argsort(-delta) if delta[i] > 0][:3]
    return ShiftTest(float(stat), float(p_value), float(0.5 * np.abs(delta).sum()), rising)


def matching_windows(now: datetime, window: timedelta, weeks: int) -> list[tuple[datetime, datetime]]:
    """The same weekday/hour window as ``[now - window, now)`` in each of the ``weeks`` preceding weeks."""
    return [(now - window - timedelta(weeks=k), now - timedelta(weeks=k)) for k in range(1, weeks + 1)]


def decide_drift(reference: Mapping[str, Any], recent: Mapping[str, Any], thresholds: DriftThresholds) -> DriftReport:
    """Pure decision from two ``storage.registry.window_stats`` dicts."""
    n_ref, n_rec = int(reference.get("n", 0)), int(recent.get("n", 0))
    samples = {"reference": n_ref, "recent": n_rec}
    if min(n_ref, n_rec) < thresholds.min_samples:
        return DriftReport(False, [f"too few scores to judge ({n_ref} reference, {n_rec} recent, "
                                   f"need {thresholds.min_samples})"], samples=samples)
    reasons: list[str] = []
    tests: dict[str, dict[str, Any]] = {}
    drifted_slice: dict[str, Any] = {}
    for column in ("sentiment", "topic"):
        test = shift_test(reference.get(column) or {}, recent.get(column) or {})
        tests[column] = {"chi2": round(test.statistic, 3), "p_value": test.p_value, "tv": round(test.effect, 4),
                         "rising": test.rising}
        if test.p_value < thresholds.alpha and test.effect >= thresholds.min_effect:
            reasons.append(f"{column} mix shifted: TV {test.effect:.3f} (p={test.p_value:.1e}), "
                           f"rising {', '.join(test.rising)}")
            drifted_slice = drifted_slice or {"column": column, "labels": test.rising}
    low = shift_test({"low": reference.get("low_confidence", 0), "ok": n_ref - reference.get("low_confidence", 0)},
                     {"low": recent.get("low_confidence", 0), "ok": n_rec - recent.get("low_confidence", 0)})
    low_ref, low_rec = reference.get("low_confidence", 0) / n_ref, recent.get("low_confidence", 0) / n_rec
    tests["low_confidence"] = {"p_value": low.p_value, "reference": round(low_ref, 4), "recent": round(low_rec, 4)}
    if low.p_value < thresholds.alpha and low_rec - low_ref >= thresholds.min_effect:
        reasons.append(f"low-confidence share rose {low_ref:.3f} -> {low_rec:.3f} (p={low.p_value:.1e})")
        drifted_slice = drifted_slice or {"column": None, "labels": []}
    confidence: dict[str, Any] = {}
    for key in ("sentiment_confidence", "topic_confidence"):
        old, new = reference.get(key), recent.get(key)
        confidence[key] = {"reference": old, "recent": new}
        if old is not None and new is not None and old - new > thresholds.confidence_drop:
            reasons.append(f"mean {key.replace('_', ' ')} fell {old - new:.3f} ({old:.3f} -> {new:.3f})")
            drifted_slice = drifted_slice or {"column": None, "labels": []}
    return DriftReport(bool(reasons), reasons, tests, confidence, samples, drifted_slice)


def check_drift(
    engine: Engine, *, window: timedelta, reference_weeks: int, thresholds: DriftThresholds, now: datetime,
    model_version: str | None = None,
) -> tuple[DriftReport, str | None]:
    """Read the recent window and its matching reference windows from ``scores`` and decide.

    ``model_version`` defaults to the active one; returns (report, version judged).
    """
    with engine.connect() as conn:
        version = model_version or sql.get_alias(conn)
        if version is None:
            return DriftReport(False, ["no active model"]), None
        recent = sql.window_stats(conn, windows=[(now - window, now)], model_version=version,
                                  low_confidence=thresholds.low_confidence)
        reference = sql.window_stats(conn, windows=matching_windows(now, window, reference_weeks),
                                     model_version=version, low_confidence=thresholds.low_confidence)
    return decide_drift(reference, recent, thresholds), version


def open_labelling_request(engine: Engine, report: DriftReport, *, model_version: str, now: datetime,
                           window: timedelta, size: int) -> int:
    """Store the ``size`` most uncertain texts of the drifted slice in the recent window for analysts."""
    column = report.slice.get("column")
    with engine.begin() as conn:
        items = sql.uncertain_scores(conn, start=now - window, end=now, model_version=model_version, column=column,
                                     labels=list(report.slice.get("labels") or []), limit=size)
        return labelling_sql.create_request(conn, model_version=model_version, window_start=now - window,
                                            window_end=now, reasons=report.reasons, drifted_slice=report.slice,
                                            items=items)


def thresholds_from(settings: Any) -> DriftThresholds:
    r = settings.retrain
    return DriftThresholds(alpha=r.drift_alpha, min_effect=r.drift_min_effect,
                           confidence_drop=r.confidence_drop_threshold, min_samples=r.drift_min_samples,
                           low_confidence=r.drift_low_confidence)
