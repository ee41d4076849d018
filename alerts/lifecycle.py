"""Alert lifecycle: what a detector transition does in the database, inside the caller's transaction.

fire -> an ``alerts`` row (``firing``, or ``silenced`` when a silence covers the scope: recorded, not sent)
plus one ``trigger`` outbox row per routed notifier; escalate -> the new evidence appended to the open alert and
an ``escalate:<n>`` trigger to the notifiers that got the first one; resolve -> ``resolved`` plus a ``resolve`` row to each
notifier that got the trigger. Because the alert, the detector state and the outbox rows commit together, a
crash can neither lose a notification nor send one for a state change that did not happen.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection

from alerts.detector import DetectionParams, Transition
from alerts.payloads import LinkConfig, alert_links, group_payload, notification_payload
from alerts.rules import RuleConfig, RulesFile
from alerts.windows import WindowSeries
from storage import alerts as db

EVIDENCE_WINDOWS = 36  # windows of history drawn in the evidence plot


def ts(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc)


def dedup_key(rule: str, scope_type: str, scope: str, started_at: int) -> str:
    """Stable per alert episode; PagerDuty trigger/ack/resolve share it, webhooks use it for idempotency."""
    return f"marketmood/{rule}/{scope_type}/{scope}/{started_at}"


def group_key(rule: RuleConfig, rules: RulesFile) -> str:
    """Alerts of one rule going to one route share a group key (as Alertmanager's ``group_by``)."""
    return f"{rule.name}/{rule.severity}/{','.join(rules.route(rule.severity)) or 'recorded'}"


#: Channels a person reads: alerts of one rule that change state in one evaluation reach them as one message.
#: PagerDuty keeps one event per alert (its dedup_key carries trigger/ack/resolve of exactly one alert; its
#: own alert grouping folds them into one incident, helped by the group key in custom_details).
GROUPABLE_KINDS = frozenset({"slack", "email", "webhook"})


def groupable_notifiers(rules: RulesFile, severity: str) -> tuple[str, ...]:
    """The routed notifiers of ``severity`` whose kind takes grouped messages."""
    return tuple(n for n in rules.route(severity) if n in rules.notifiers and rules.notifiers[n].type in GROUPABLE_KINDS)


def group_notifications(conn: Connection, rules: RulesFile, rule: RuleConfig, alerts: list[dict[str, Any]],
                        event: str) -> int:
    """Fold the ``event`` rows of ``alerts`` (enqueued in this transaction) into one row per groupable
    notifier: the lowest alert id leads and carries every member; the others become ``grouped``. Returns the
    number of rows folded. A rule with ``group: false`` or a single alert is left as it is."""
    if not rule.group or len(alerts) < 2:
        return 0
    by_id = {a["id"]: a for a in alerts}
    folded = 0
    for notifier in groupable_notifiers(rules, rule.severity):
        rows = db.pending_rows(conn, sorted(by_id), notifier, event)
        if len(rows) < 2:
            continue
        members = [by_id[r["alert_id"]] for r in rows]
        folded += db.merge_into(conn, rows[0]["id"], [r["id"] for r in rows[1:]],
                                group_payload(members, event, members[0].get("group_key")))
    return folded


def enqueue(conn: Connection, alert: dict[str, Any], notifiers: list[str] | tuple[str, ...], event: str) -> int:
    """Render the payload here (storage stores it as given) and enqueue it once per notifier."""
    if not notifiers:
        return 0
    return db.enqueue(conn, alert["id"], notifiers, event, notification_payload(alert, event))


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None: JSON has no such numbers, so PostgreSQL
    refuses the evidence, and one NaN score in a span made its rule fail on that window in every pass."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def build_evidence(conn: Connection, rule: RuleConfig, scope_type: str, scope: str, tr: Transition,
                   series: WindowSeries, links: LinkConfig | None = None) -> dict[str, Any]:
    """Everything an on-call needs to judge the alert without opening a dashboard."""
    p: DetectionParams = rule.detection
    w = series.window_s
    span_start = tr.at - (tr.observation.span_windows or p.span_windows) * w  # the span that was judged
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
        links=alert_links(links or LinkConfig(), rule.runbook_url, scope_type, scope,
                          tr.started_at - EVIDENCE_WINDOWS * w, tr.at + 12 * w),
    )
    return json_safe(ev)


def fire(conn: Connection, rules: RulesFile, rule: RuleConfig, scope_type: str, scope: str, tr: Transition,
         evidence: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """Open the alert and enqueue its trigger (unless silenced); returns the alert row.

    Silenced if a silence covers the window's end *or* ``now`` (the evaluation's clock): when evaluation lags
    (workers behind, a catch-up), on-call may have silenced the scope after that window ended, and paging
    them for it anyway is what the silence was set to stop."""
    existing = db.open_alert(conn, rule.name, scope_type, scope)
    if existing is not None:  # defensive: the state machine never fires twice for one episode
        return existing
    holder = inhibiting_alert(conn, rule, scope, tr)
    if holder is not None:
        evidence = {**evidence, "inhibited_by": {"alert_id": holder["id"], "rule": holder["rule"],
                                                 "scope_type": holder["scope_type"], "scope": holder["scope"]}}
    silenced = (holder is not None or db.is_silenced(conn, scope_type, scope, ts(tr.at))
                or (now is not None and db.is_silenced(conn, scope_type, scope, now)))
    alert = db.insert_alert(
        conn, rule=rule.name, scope_type=scope_type, scope=scope, severity=rule.severity,
        state="silenced" if silenced else "firing", dedup_key=dedup_key(rule.name, scope_type, scope, tr.started_at),
        started_at=ts(tr.started_at), evidence=evidence, group_key=group_key(rule, rules),
    )
    if not silenced:
        enqueue(conn, alert, rules.route(rule.severity), "trigger")
    return alert


def escalate(conn: Connection, rule: RuleConfig, scope_type: str, scope: str, tr: Transition,
             evidence: dict[str, Any]) -> dict[str, Any] | None:
    """A new event on top of an open alert (``escalate`` transition): record its evidence with the alert and
    send it, as a trigger carrying the new evidence, to the notifiers that got the first trigger (PagerDuty
    folds it into the open incident by its dedup key; Slack and email readers see what changed). A silenced
    alert records it only."""
    alert = db.open_alert(conn, rule.name, scope_type, scope)
    if alert is None:
        return None
    stored = dict(alert["evidence"] or {})
    escalations = [*stored.get("escalations", []), {k: v for k, v in evidence.items() if k != "series"}]
    alert = db.update_alert(conn, alert["id"], evidence={**stored, "escalations": escalations})
    if alert["state"] in ("firing", "acknowledged"):
        n = len(escalations)
        db.enqueue(conn, alert["id"], db.triggered_notifiers(conn, alert["id"]), f"escalate:{n}",
                   notification_payload({**alert, "evidence": evidence}, "trigger", escalation=n))
    return alert


def inhibiting_alert(conn: Connection, rule: RuleConfig, ticker: str, tr: Transition) -> dict[str, Any] | None:
    """The open alert of an ``inhibited_by`` topic rule on this ticker's dominant topic in the span, if any:
    while it is open the ticker alert is recorded but held (on-call already has the bigger picture)."""
    if not rule.inhibited_by:
        return None
    w = tr.observation.window_end - tr.observation.baseline_end  # the span, at least one window
    topic = db.dominant_topic(conn, ticker, ts(tr.at - max(w, 1)), ts(tr.at))
    if topic is None:
        return None
    for source in rule.inhibited_by:
        alert = db.open_alert(conn, source, "topic", topic)
        if alert is not None:
            return alert
    return None


def resolve(conn: Connection, rule: RuleConfig, scope_type: str, scope: str, tr: Transition) -> dict[str, Any] | None:
    """Close the open alert and enqueue the resolve to the notifiers that got the trigger."""
    alert = db.open_alert(conn, rule.name, scope_type, scope)
    if alert is None:
        return None
    return _close(conn, alert, ts(tr.at),
                  {**(alert["evidence"] or {}), "at_resolve": json_safe(tr.observation.evidence())})


def _close(conn: Connection, alert: dict[str, Any], at: datetime, evidence: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``alert`` at ``at`` with ``evidence`` and enqueue the resolve to the notifiers that got the trigger."""
    alert = db.update_alert(conn, alert["id"], state="resolved", resolved_at=at, evidence=evidence)
    enqueue(conn, alert, db.triggered_notifiers(conn, alert["id"]), "resolve")
    return alert


def retire_unjudged(conn: Connection, rules: RulesFile, at: datetime) -> list[dict[str, Any]]:
    """Resolve the open alerts no rule judges any more (rule removed, scope excluded or dropped from
    ``include``) with the reason in their evidence, and forget their detector state.

    No window can resolve such an alert: its scope is never evaluated again, so the incident stayed open
    and reminders went on for ever after on-call excluded a noisy topic to stop it."""
    retired = []
    for listed in db.list_alerts(conn, state="open", limit=10_000):
        reason = rules.not_judged_because(listed["rule"], listed["scope_type"], listed["scope"])
        if reason is None:
            continue
        alert = db.lock_alert(conn, listed["id"])
        if alert is None or alert["state"] == "resolved":
            continue
        retired_evidence = {**(alert["evidence"] or {}), "retired": {"reason": reason, "at": at.isoformat()}}
        alert = _close(conn, alert, at, retired_evidence)
        db.save_scope_state(conn, alert["rule"], alert["scope_type"], alert["scope"], None)
        retired.append(alert)
    return retired


def acknowledge(conn: Connection, alert_id: int, by: str) -> dict[str, Any] | None:
    """Mark an open alert acknowledged and tell every notifier that got the trigger (PagerDuty then stops
    escalating). Idempotent; a resolved alert is returned unchanged; None when no such alert exists."""
    alert = db.lock_alert(conn, alert_id)
    if alert is None or alert["state"] not in ("firing", "silenced"):
        return alert
    alert = db.update_alert(conn, alert_id, state="acknowledged", acknowledged_at=datetime.now(timezone.utc),
                            acknowledged_by=by)
    enqueue(conn, alert, db.triggered_notifiers(conn, alert_id), "acknowledge")
    return alert


def enqueue_reminders(conn: Connection, rule: RuleConfig, now: datetime) -> int:
    """``repeat_interval`` for alerts that keep firing: the n-th reminder is due n intervals after the fire
    (derived from the clock, not stored, so replays, restarts and replicas enqueue each reminder once;
    after downtime only the latest is sent). Acknowledged and silenced alerts are not reminded."""
    if rule.repeat_interval_minutes is None:
        return 0
    interval = rule.repeat_interval_minutes * 60
    n = 0
    for alert in db.firing_alerts(conn, rule.name):
        evidence = alert.get("evidence") or {}
        fired_at = evidence.get("fired_at")
        if not fired_at:
            continue
        # An alert released from a silence was paged at its release: its first reminder is an interval after
        # that, not at once (the count still runs from the fire, so each reminder keeps its own number).
        paged_at = datetime.fromisoformat(evidence.get("paged_at") or fired_at)
        if (now - paged_at).total_seconds() < interval:
            continue
        k = int((now - datetime.fromisoformat(fired_at)).total_seconds() // interval)
        notifiers = db.triggered_notifiers(conn, alert["id"])
        if k >= 1 and notifiers:
            n += db.enqueue(conn, alert["id"], notifiers, f"repeat:{k}",
                                  notification_payload(alert, "trigger", repeat=k))
    return n


def reconcile_silences(conn: Connection, rules: RulesFile, at: datetime) -> list[dict[str, Any]]:
    """Mute firing alerts a new silence covers; un-mute (and page, once) silenced alerts whose silence ended."""
    changed = []
    for alert in db.open_alerts_silence_mismatch(conn, at):
        # The list is a snapshot: another replica may have resolved (or an on-call engineer acknowledged) the
        # alert since. Lock the row and act only on the state it was listed in, or a resolved alert would be
        # set back to firing and paged after its resolve.
        current = db.lock_alert(conn, alert["id"])
        if current is None or current["state"] != alert["state"]:
            continue
        if alert["state"] == "firing":
            changed.append(db.update_alert(conn, alert["id"], state="silenced"))
        else:
            # paged now, not when it fired: reminders count their interval from here (see enqueue_reminders)
            evidence = {**(current["evidence"] or {}), "paged_at": at.isoformat()}
            routed = rules.route(alert["severity"])
            paged = set(db.triggered_notifiers(conn, alert["id"]))
            if paged & set(routed):  # the trigger went out before the silence: the outbox key (alert, notifier,
                # "trigger") would swallow a second one, so this page is an event of its own, numbered
                evidence["unsilenced"] = int(evidence.get("unsilenced", 0)) + 1
            alert = db.update_alert(conn, alert["id"], state="firing", evidence=evidence)
            enqueue(conn, alert, [n for n in routed if n not in paged], "trigger")  # fired while silenced
            if paged & set(routed):
                k = evidence["unsilenced"]
                db.enqueue(conn, alert["id"], [n for n in routed if n in paged], f"unsilence:{k}",
                           notification_payload(alert, "trigger", unsilenced=k))
            changed.append(alert)
    return changed
