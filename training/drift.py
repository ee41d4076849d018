"""Drift of the active model's inputs: a size-aware test on matching weekday/hour windows.

Why this shape:
* News has a weekly rhythm (earnings mornings, quiet weekends), so the recent window is compared with the
  same weekday and hours of the preceding ``reference_weeks`` weeks, never with "the last 7 days".
* A fixed PSI threshold fires on noise at low volume and misses real shifts at high volume. Instead each
  label distribution gets a chi-square test of homogeneity (its p-value accounts for both window sizes)
  AND one label's share must move by at least ``min_effect`` (the unit analysts state a shift in: "negative
  went from 15 % to 25 %" is 0.10), so a huge volume does not turn a trivial wobble into an alarm. Total
  variation is reported too but not used: over 20 topics it sums the sampling noise of every small topic
  (~0.06 at n = 900), so a TV floor cannot separate noise from a shift there.
* Real news is not a multinomial draw: the mix of one week differs from the next by more than sampling
  noise (which companies report, what happened), and unevenly: one company's results fill a day of
  "Earnings" while other topics barely move. So each label is tested on its own (its share against the
  pooled reference, ``label_shifts``), scaled by its own week-to-week dispersion in the reference windows
  (Pearson dispersion, moderated toward the whole mix's with ``PRIOR_DOF`` pseudo degrees of freedom, as
  limma does for gene variances), judged against F, Bonferroni-adjusted over the labels. One dispersion
  for the whole mix (a quasi-likelihood test of the table) was too small for the volatile labels: it
  alarmed on ~10 % of shuffled quiet Reuters weeks; per label, 3.5 % (BENCHMARKS.md).
* Beside the sentiment and topic mix: mean sentiment confidence, mean topic confidence and the share of
  low-confidence scores (a two-proportion chi-square plus the same effect floor).
Only one model version's scores count, so a model change never looks like drift. Drift opens a labelling
request (the uncertain texts of the drifted slice); it does not retrain and pages nobody.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from scipy.stats import chi2_contingency, f as f_dist
from sqlalchemy.engine import Engine

from storage import labelling as labelling_sql
from storage import registry as sql


@dataclass(frozen=True)
class DriftThresholds:
    alpha: float = 0.01  # false-alarm rate of each test (sentiment mix, topic mix, low confidence) under no shift
    min_effect: float = 0.05  # largest change of one label's share (label mixes), or rise of the low-confidence share
    confidence_drop: float = 0.1
    min_samples: int = 200
    low_confidence: float = 0.5


@dataclass(frozen=True)
class ShiftTest:
    statistic: float
    p_value: float
    effect: float  # the largest change of one label's share (a "10-point class-share shift" is 0.10)
    rising: list[str]  # labels whose share grew most (the drifted slice)
    tv: float = 0.0  # total variation distance between the two label distributions (reported)


@dataclass(frozen=True)
class DriftReport:
    drifted: bool
    reasons: list[str] = field(default_factory=list)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    confidence: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    slice: dict[str, Any] = field(default_factory=dict)  # {"column": ..., "labels": [...]} to label first


def _table(histograms: Sequence[Mapping[str, int]]) -> tuple[np.ndarray, list[str]]:
    labels = sorted(set().union(*histograms))
    table = np.array([[h.get(label, 0) for label in labels] for h in histograms], dtype=float)
    keep = table.sum(axis=0) > 0
    rows = table.sum(axis=1) > 0
    return table[np.ix_(rows, keep)], [lbl for lbl, k in zip(labels, keep, strict=True) if k]


def dispersion(windows: Sequence[Mapping[str, int]]) -> tuple[float, int]:
    """(Pearson dispersion, its degrees of freedom) of label histograms of windows that share no shift:
    chi-square of their table over its df, at least 1. (1.0, 0) when it cannot be estimated."""
    table, _ = _table(windows)
    if table.shape[0] < 2 or table.shape[1] < 2:
        return 1.0, 0
    stat, _, dof, _ = chi2_contingency(table, correction=False)
    return max(1.0, float(stat) / dof), int(dof)


def shift_test(reference: Mapping[str, int], recent: Mapping[str, int], *, phi: float = 1.0,
               phi_dof: int = 0) -> ShiftTest:
    """Test of homogeneity between two label histograms, with the TV distance and the rising labels.

    With ``phi`` = 1 a chi-square test; otherwise the statistic is scaled by the reference windows'
    dispersion and judged against F(df, ``phi_dof``) (``phi`` is itself an estimate).
    """
    table, labels = _table([reference, recent])
    if table.shape != (2, len(labels)) or len(labels) < 2:
        return ShiftTest(0.0, 1.0, 0.0, [])
    stat, p_value, dof, _ = chi2_contingency(table, correction=False)
    if phi > 1.0 and phi_dof > 0:
        p_value = float(f_dist.sf(stat / dof / phi, dof, phi_dof))
    shares = table / table.sum(axis=1, keepdims=True)
    delta = shares[1] - shares[0]
    rising = [labels[i] for i in np.argsort(-delta) if delta[i] > 0][:3]
    return ShiftTest(float(stat), float(p_value), float(np.abs(delta).max()), rising, float(0.5 * np.abs(delta).sum()))


PRIOR_DOF = 10  # pseudo degrees of freedom of the pooled dispersion in each label's moderated estimate


def label_shifts(reference_windows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any],
                 recent: Mapping[str, Any], column: str, pooled: tuple[float, int]) -> list[dict[str, Any]]:
    """One test per label of ``column``: its share in the recent window against the pooled reference, scaled
    by that label's own week-to-week dispersion in the reference windows, Bonferroni-adjusted over labels;
    most significant first.

    Why per label: news wobbles unevenly. One company's results can fill a day of "Earnings" while the other
    topics barely move, so one dispersion for the whole mix is too small for the volatile labels and the
    mix test's tail is far heavier than its F reference (it alarmed on ~9 % of shuffled quiet Reuters weeks
    at p < 0.001). A label's own dispersion keeps each test at its level. ``pooled`` is the whole mix's
    (dispersion, dof) from ``dispersion``, the prior each label's estimate is moderated toward."""
    labels = sorted(set(reference.get(column) or {}) | set(recent.get(column) or {}))
    n_ref, n_rec = int(reference.get("n", 0)), int(recent.get("n", 0))

    def binary(w: Mapping[str, Any], label: str) -> dict[str, int]:
        hit = int((w.get(column) or {}).get(label, 0))
        return {"in": hit, "out": int(w.get("n", 0)) - hit}

    pooled_phi, pooled_dof = pooled
    out = []
    for label in labels:
        own, own_dof = dispersion([binary(w, label) for w in reference_windows])
        # Moderated (limma-style): the label's own dispersion, shrunk toward the whole mix's with PRIOR_DOF
        # pseudo degrees of freedom; a few weeks cannot pin down one label's volatility alone.
        prior = min(PRIOR_DOF, pooled_dof)
        phi_dof = own_dof + prior
        phi = (own * own_dof + pooled_phi * prior) / phi_dof if phi_dof else 1.0
        ref_hist, rec_hist = binary(reference, label), binary(recent, label)
        test = shift_test(ref_hist, rec_hist, phi=phi, phi_dof=phi_dof)
        ref_share = ref_hist["in"] / n_ref if n_ref else 0.0
        rec_share = rec_hist["in"] / n_rec if n_rec else 0.0
        out.append({"label": label, "reference": round(ref_share, 4), "recent": round(rec_share, 4),
                    "shift": round(rec_share - ref_share, 4), "dispersion": round(phi, 3),
                    "p_adjusted": min(1.0, test.p_value * len(labels))})
    return sorted(out, key=lambda m: m["p_adjusted"])


def pool(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One ``window_stats`` dict for several windows (counts summed, means weighted by volume)."""
    n = sum(int(w.get("n", 0)) for w in windows)
    out: dict[str, Any] = {"n": n, "low_confidence": sum(int(w.get("low_confidence", 0)) for w in windows)}
    for column in ("sentiment", "topic"):
        total: dict[str, int] = {}
        for w in windows:
            for label, count in (w.get(column) or {}).items():
                total[label] = total.get(label, 0) + int(count)
        out[column] = total
    for key in ("sentiment_confidence", "topic_confidence"):
        parts = [(w[key], w["n"]) for w in windows if w.get(key) is not None and w.get("n")]
        out[key] = sum(v * k for v, k in parts) / sum(k for _, k in parts) if parts else None
    return out


def matching_windows(now: datetime, window: timedelta, weeks: int) -> list[tuple[datetime, datetime]]:
    """The same weekday/hour window as ``[now - window, now)`` in each of the ``weeks`` preceding weeks."""
    return [(now - window - timedelta(weeks=k), now - timedelta(weeks=k)) for k in range(1, weeks + 1)]


def decide_drift(reference_windows: Sequence[Mapping[str, Any]], recent: Mapping[str, Any],
                 thresholds: DriftThresholds) -> DriftReport:
    """Pure decision from ``storage.registry.window_stats`` dicts: one per matching reference window (their
    spread calibrates the test) and the recent window."""
    reference = pool(reference_windows)
    n_ref, n_rec = int(reference.get("n", 0)), int(recent.get("n", 0))
    samples = {"reference": n_ref, "recent": n_rec}
    if min(n_ref, n_rec) < thresholds.min_samples:
        return DriftReport(False, [f"too few scores to judge ({n_ref} reference, {n_rec} recent, "
                                   f"need {thresholds.min_samples})"], samples=samples)
    reasons: list[str] = []
    tests: dict[str, dict[str, Any]] = {}
    drifted_slice: dict[str, Any] = {}
    windows = [w for w in reference_windows if w.get("n")]
    for column in ("sentiment", "topic"):
        mix = shift_test(reference.get(column) or {}, recent.get(column) or {})
        pooled = dispersion([w.get(column) or {} for w in windows])
        moved = label_shifts(windows, reference, recent, column, pooled)
        hits = [m for m in moved if m["p_adjusted"] < thresholds.alpha and abs(m["shift"]) >= thresholds.min_effect]
        tests[column] = {"tv": round(mix.tv, 4), "max_shift": round(mix.effect, 4), "dispersion": round(pooled[0], 3),
                         "p_value": min((m["p_adjusted"] for m in moved), default=1.0),
                         "labels": [m for m in moved if m["p_adjusted"] < 0.5][:5], "significant": hits}
        if hits:
            said = ", ".join(f"{m['label']} {m['reference']:.1%} -> {m['recent']:.1%} (p={m['p_adjusted']:.1e})"
                             for m in hits[:3])
            reasons.append(f"{column} mix shifted: {said}")
            rising = [m["label"] for m in hits if m["shift"] > 0]
            drifted_slice = drifted_slice or {"column": column, "labels": rising}
    def low_hist(w: Mapping[str, Any]) -> dict[str, int]:
        return {"low": int(w.get("low_confidence", 0)), "ok": int(w.get("n", 0)) - int(w.get("low_confidence", 0))}

    phi, phi_dof = dispersion([low_hist(w) for w in windows])
    low = shift_test(low_hist(reference), low_hist(recent), phi=phi, phi_dof=phi_dof)
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
        reference = [sql.window_stats(conn, windows=[w], model_version=version,
                                      low_confidence=thresholds.low_confidence)
                     for w in matching_windows(now, window, reference_weeks)]
    return decide_drift(reference, recent, thresholds), version


def open_labelling_request(engine: Engine, report: DriftReport, *, model_version: str, now: datetime,
                           window: timedelta, size: int, cooldown: timedelta | None = None) -> int | None:
    """Store the ``size`` most uncertain texts of the drifted slice in the recent window for analysts.

    With ``cooldown``: None, and nothing stored, when a request for ``model_version`` was opened less than
    ``cooldown`` before ``now``, checked under a lock in the same transaction as the insert, so two scheduler
    replicas that both saw the drift (and no request) at one tick open one request, not two."""
    column = report.slice.get("column")
    with engine.begin() as conn:
        if cooldown is not None:
            labelling_sql.lock_requests(conn)
            last = labelling_sql.latest_request_time(conn, model_version)
            if last is not None and now - last < cooldown:
                return None
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
