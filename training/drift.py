"""Drift signals that can trigger a retrain: label-distribution shift (PSI) and a drop in mean confidence.

Both compare a recent window of the active model's scores with the reference window right before it.
Only the active version's scores count, so a model change itself never looks like drift, and the
reference restarts from the promotion time (a fresh model is not judged on its predecessor's output).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from storage import registry as sql

# Smoothing for empty bins: PSI is infinite otherwise.
_EPS = 1e-4


def psi(reference: Mapping[str, int], recent: Mapping[str, int]) -> float:
    """Population stability index between two label histograms (0 = identical; > 0.2 is a big shift)."""
    labels = set(reference) | set(recent)
    ref_total, rec_total = sum(reference.values()), sum(recent.values())
    if not labels or ref_total == 0 or rec_total == 0:
        return 0.0
    total = 0.0
    for label in labels:
        p = max(reference.get(label, 0) / ref_total, _EPS)
        q = max(recent.get(label, 0) / rec_total, _EPS)
        total += (q - p) * math.log(q / p)
    return total


@dataclass(frozen=True)
class DriftThresholds:
    psi: float = 0.2
    confidence_drop: float = 0.1
    min_samples: int = 200


@dataclass(frozen=True)
class DriftReport:
    drifted: bool
    reasons: list[str] = field(default_factory=list)
    psi: dict[str, float] = field(default_factory=dict)
    confidence: dict[str, float | None] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)


def decide_drift(
    reference: Mapping[str, Mapping[str, int]],
    recent: Mapping[str, Mapping[str, int]],
    ref_confidence: float | None,
    recent_confidence: float | None,
    thresholds: DriftThresholds,
) -> DriftReport:
    """Pure decision from histograms per column ("sentiment", "topic") and mean confidences."""
    n_ref = sum(reference.get("sentiment", {}).values())
    n_rec = sum(recent.get("sentiment", {}).values())
    samples = {"reference": n_ref, "recent": n_rec}
    if min(n_ref, n_rec) < thresholds.min_samples:
        return DriftReport(False, [f"too few scores to judge ({n_ref} reference, {n_rec} recent, "
                                   f"need {thresholds.min_samples})"], samples=samples)
    reasons: list[str] = []
    values = {col: round(psi(reference.get(col, {}), recent.get(col, {})), 4) for col in reference}
    for col, value in values.items():
        if value > thresholds.psi:
            reasons.append(f"{col} PSI {value:.3f} > {thresholds.psi}")
    if ref_confidence is not None and recent_confidence is not None:
        drop = ref_confidence - recent_confidence
        if drop > thresholds.confidence_drop:
            reasons.append(f"mean confidence fell {drop:.3f} ({ref_confidence:.3f} -> {recent_confidence:.3f})")
    return DriftReport(bool(reasons), reasons, values,
                       {"reference": ref_confidence, "recent": recent_confidence}, samples)


def check_drift(
    engine: Engine, *, window: timedelta, reference_window: timedelta, thresholds: DriftThresholds,
    now: datetime, model_version: str | None = None,
) -> DriftReport:
    """Read both windows from ``scores`` and decide. ``model_version`` defaults to the active one."""
    with engine.connect() as conn:
        version = model_version or sql.get_alias(conn)
        recent_start = now - window
        ref_start = recent_start - reference_window
        if model_version is None:
            promoted_at = sql.alias_changed_at(conn)
            if promoted_at is not None and promoted_at > ref_start:
                ref_start = min(promoted_at, recent_start)
        cols = ("sentiment", "topic")
        ref = {c: sql.label_counts(conn, start=ref_start, end=recent_start, column=c, model_version=version) for c in cols}
        rec = {c: sql.label_counts(conn, start=recent_start, end=now, column=c, model_version=version) for c in cols}
        ref_conf, _ = sql.mean_confidence(conn, start=ref_start, end=recent_start, model_version=version)
        rec_conf, _ = sql.mean_confidence(conn, start=recent_start, end=now, model_version=version)
    return decide_drift(ref, rec, ref_conf, rec_conf, thresholds)


def thresholds_from(settings: Any) -> DriftThresholds:
    r = settings.retrain
    return DriftThresholds(psi=r.psi_threshold, confidence_drop=r.confidence_drop_threshold,
                           min_samples=r.drift_min_samples)
