"""Alert lifecycle: what a detector transition does in the database, inside the caller's transaction.

fire -> an ``alerts`` row (``firing``, or ``silenced`` when a silence covers the scope: recorded, not sent)
plus one ``trigger`` outbox row per routed notifier; resolve -> ``resolved`` plus a ``resolve`` row to each
notifier that got the trigger. Because the alert, the detector state and the outbox rows commit together, a
crash can neither lose a notification nor send one for a state change that did not happen.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection

from alerts.detector import DetectionParams, Transition
from alerts.rules import RuleConfig, RulesFile
from alerts.windows import WindowSeries
from storage import alerts as db

EVIDENCE_WINDOWS = 36  # windows of history drawn in the evidence plot


def ts(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc)


def dedup_key(rule: str, scope_type: str, scope: str, started_at: int) -> str:
    """Stable per alert episode; PagerDuty trigger/ack/resolve share it, webhooks use it for idempotency."""
    return f"marketmood/{rule}/{scope_type}/{scope}/{started_at}"


def build_evidence(conn: Connection, rule: RuleConfig, scope_type: str, scope: str, tr: Transition,
                   series: WindowSeries) -> dict[str, Any]:
    """Everything an on-call needs to judge the alert without opening a dashboard."""
    p: DetectionParams = rule.detection
    w = series.window_s
    span_start = tr.at - p.span_windows * w
    ev: dict[str, Any] = tr.observation.evidence()
    ev.update(
        window_s=w,
        span_start=ts(span_start).isoformat(),
        span_end=ts(tr.at).isoformat(),
        fired_at=ts(tr.at).isoformat(),
        baseline_end=ts(tr.observation.baseline_end).isoformat(),
        baseline_hours=p.baseline_hours,
        thresholds={"fire_p": p.fire_p, "min_delta": p.min_delta, "min_volume": p.min_volume},
        headlines=db.top_negative_headlines(conn, scope_type, scope, ts(span_start), ts(tr.at), rule.top_headlines),
        series=[[start + w, c.negative, c.n] for start, c in series.windows(tr.at - EVIDENCE_WINDOWS * w, tr.at)],
    )
    return ev


def fire(conn: Connection, rules: RulesFile, rule: RuleConfig, scope_type: str, scope: str, tr: Transition,
         evidence: dict[str, Any]) -> dict[str, Any]:
    """Open the alert and enqueue its trigger (unless silenced); returns the alert row."""
    existing = db.open_alert(conn, rule.name, scope_type, scope)
    if existing is not None:  # defensive: the state machine never fires twice for one episode
        return existing
    silenced = db.is_silenced(conn, scope_type, scope, ts(tr.at))
    alert = db.insert_alert(
        conn, rule=rule.name, scope_type=scope_type, scope=scope, severity=rule.severity,
        state="silenced" if silenced else "firing", dedup_key=dedup_key(rule.name, scope_type, scope, tr.started_at),
        started_at=ts(tr.started_at), evidence=evidence,
    )
    if not silenced:
        db.enqueue(conn, alert, rules.route(rule.severity), "trigger")
    return alert


def resolve(conn: Connection, rule: RuleConfig, scope_type: str, scope: str, tr: Transition) -> dict[str, Any] | None:
    """Close the open alert and enqueue the resolve to the notifiers that got the trigger."""
    alert = db.open_alert(conn, rule.name, scope_type, scope)
    if alert is None:
        return None
    evidence = dict(alert["evidence"] or {})
    evidence["at_resolve"] = tr.observation.evidence()
    alert = db.update_alert(conn, alert["id"], state="resolved", resolved_at=ts(tr.at), evidence=evidence)
    db.enqueue(conn, alert, db.triggered_notifiers(conn, alert["id"]), "resolve")
    return alert


def reconcile_silences(conn: Connection, rules: RulesFile, at: datetime) -> list[dict[str, Any]]:
    """Mute firing alerts a new silence covers; un-mute (and page, once) silenced alerts whose silence ended."""
    changed = []
    for alert in db.open_alerts_silence_mismatch(conn, at):
        if alert["state"] == "firing":
            changed.append(db.update_alert(conn, alert["id"], state="silenced"))
        else:
            alert = db.update_alert(conn, alert["id"], state="firing")
            db.enqueue(conn, alert, rules.route(alert["severity"]), "trigger")
            changed.append(alert)
    return changed
