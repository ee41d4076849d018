"""Notification payloads: one generic JSON document per (alert, event), rendered per notifier at send time.

The outbox stores this document, so a notification describes the alert as it was at the state change even
if it is delivered hours later by a recovered notifier.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

EVENTS = ("trigger", "acknowledge", "resolve")

#: An evidence field over this many bytes of JSON is bulk (an embedded plot, a long text, a long escalation
#: history) when a notification must shrink; the numbers on-call judges an alert by are far smaller.
SMALL_FIELD_BYTES = 2_000
#: Headline titles are cut to this many characters before headlines are dropped (feeds allow 2,000).
TRIMMED_TITLE_CHARS = 300


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Where notifications point: a default runbook and the Grafana dashboard showing a scope."""

    runbook_url: str | None = None
    grafana_url: str | None = None
    dashboard_uid: str = "marketmood-sentiment"


def alert_links(cfg: LinkConfig, rule_runbook: str | None, scope_type: str, scope: str, t_from: int,
                t_to: int) -> dict[str, str]:
    """Runbook (the rule's, else the default) and the Grafana panel for the scope over [t_from, t_to]."""
    out: dict[str, str] = {}
    runbook = rule_runbook or cfg.runbook_url
    if runbook:
        out["runbook"] = runbook
    if cfg.grafana_url:
        query = urlencode({f"var-{scope_type}": scope, "from": t_from * 1000, "to": t_to * 1000})
        out["grafana"] = f"{cfg.grafana_url.rstrip('/')}/d/{cfg.dashboard_uid}?{query}"
    return out


def _pct(x: object) -> str:
    return f"{float(x) * 100:.0f}%" if isinstance(x, (int, float)) else "n/a"


def summary(alert: dict[str, Any], event: str) -> str:
    """One line for a pager, a Slack message or an email subject."""
    ev = alert.get("evidence") or {}
    what = f"negative-sentiment spike in {alert['scope_type']} {alert['scope']}"
    if event == "resolve":
        return f"RESOLVED: {what} ({alert['rule']})"
    if event == "acknowledge":
        return f"ACKNOWLEDGED by {alert.get('acknowledged_by') or 'someone'}: {what} ({alert['rule']})"
    return (
        f"[{alert['severity'].upper()}] {what}: {_pct(ev.get('current_share'))} negative vs "
        f"{_pct(ev.get('baseline_share'))} baseline (n={ev.get('volume', '?')}, p={ev.get('p_value', '?')})"
    )


def _iso(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def delivery_key(payload: dict[str, Any]) -> str:
    """Stable per notification: the webhook's Idempotency-Key and the email's Message-ID are derived from it
    (a retry carries the same key; a reminder carries its own; a group is keyed by its lead alert)."""
    key = f"{payload.get('alert', {}).get('dedup_key')}:{payload.get('event')}"
    if payload.get("group"):
        key += f":group-{payload['group']['size']}"
    if payload.get("escalation"):
        key += f":escalate-{payload['escalation']}"
    if payload.get("unsilenced"):
        key += f":unsilenced-{payload['unsilenced']}"
    return f"{key}:repeat-{payload['repeat']}" if payload.get("repeat") else key


def notification_payload(alert: dict[str, Any], event: str, *, repeat: int = 0, escalation: int = 0,
                         unsilenced: int = 0) -> dict[str, Any]:
    """The generic document the outbox stores and the JSON webhook sends verbatim. ``repeat`` > 0 marks the
    n-th reminder of a trigger for an alert that keeps firing (``repeat_interval_minutes``); ``escalation`` > 0
    the n-th escalation: a new event on top of the open alert, whose ``alert.evidence`` is then the new
    event's evidence (the stored alert keeps the first one and lists the escalations); ``unsilenced`` > 0 the
    n-th page of an alert whose silence ended while it was still firing, to a notifier that had its trigger."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; expected one of {EVENTS}")
    if (escalation or unsilenced) and event != "trigger":
        raise ValueError("an escalation or a page after a silence is a trigger")
    fields = ("id", "rule", "scope_type", "scope", "severity", "state", "dedup_key", "started_at",
              "acknowledged_at", "acknowledged_by", "resolved_at", "evidence")
    payload = {
        "version": 1,
        "source": "marketmood",
        "event": event,
        "summary": (f"REMINDER {repeat}, still firing: " if repeat else "")
                   + (f"ESCALATED ({escalation}), stronger while open: " if escalation else "")
                   + ("SILENCE ENDED, still firing: " if unsilenced else "") + summary(alert, event),
        "alert": {k: _iso(alert.get(k)) for k in (*fields, "group_key")},
    }
    if repeat:
        payload["repeat"] = repeat
    if escalation:
        payload["escalation"] = escalation
    if unsilenced:
        payload["unsilenced"] = unsilenced
    return payload


def members(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-alert documents a notification carries: every member of a group, or its one alert."""
    return payload.get("alerts") or [{"summary": payload.get("summary"), "alert": payload["alert"]}]


def group_summary(alerts: list[dict[str, Any]], event: str) -> str:
    """One line for a group: the rule, how many scopes and which (the first few)."""
    first = alerts[0]
    scopes = [str(a["scope"]) for a in alerts]
    shown = ", ".join(scopes[:5]) + (f" and {len(scopes) - 5} more" if len(scopes) > 5 else "")
    what = f"negative-sentiment spike in {len(alerts)} {first['scope_type']}s: {shown}"
    if event == "resolve":
        return f"RESOLVED: {what} ({first['rule']})"
    return f"[{str(first['severity']).upper()}] {what} ({first['rule']})"


def group_payload(members: list[dict[str, Any]], event: str, group_key: str | None) -> dict[str, Any]:
    """One document for the alerts of one rule and route that changed state in one evaluation (as
    Alertmanager's group): ``alert`` is the lead (first) alert, so single-alert readers keep working, and
    ``alerts`` holds every member's per-alert document."""
    if len(members) < 2:
        raise ValueError("a group has at least two alerts")
    docs = [notification_payload(a, event) for a in members]
    payload = dict(docs[0])
    payload["summary"] = group_summary(members, event)
    payload["group"] = {"key": group_key, "size": len(members)}
    payload["alerts"] = [{"summary": d["summary"], "alert": d["alert"]} for d in docs]
    return payload


def _json_bytes(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def trimmed_evidence(evidence: object) -> Iterator[dict[str, Any]]:
    """Successively smaller versions of an alert's evidence, for a channel whose messages have a size limit (the
    webhook's body bound): the sender takes the first that fits, so the alert still goes out rather than being
    refused whole. Each names what it cut in ``trimmed`` (field -> what); the stored evidence is not changed.

    Cut in the order on-call misses least: the headlines of earlier escalations; then any other field over
    SMALL_FIELD_BYTES (an embedded plot, a long text, the escalation history); then headline titles to
    TRIMMED_TITLE_CHARS; then headlines from the least negative, halving (the most negative stays longest).
    The last version has no headlines and only fields of at most SMALL_FIELD_BYTES each: the shares, p-value,
    volume, span and links on-call judges the alert by."""
    ev: dict[str, Any] = dict(evidence) if isinstance(evidence, dict) else {}
    cut: dict[str, str] = {}
    if not isinstance(evidence, dict) and evidence is not None:
        cut["evidence"] = f"not an object, dropped ({_json_bytes(evidence):,} bytes)"
        yield {"trimmed": dict(cut)}

    escalations = ev.get("escalations")
    if isinstance(escalations, list) and any(isinstance(e, dict) and "headlines" in e for e in escalations):
        ev["escalations"] = [{k: v for k, v in e.items() if k != "headlines"} if isinstance(e, dict) else e
                             for e in escalations]
        cut["escalations"] = "the headlines of each escalation dropped"
        yield {**ev, "trimmed": dict(cut)}

    bulky = {k: _json_bytes(v) for k, v in ev.items() if k != "headlines"}
    bulky = {k: size for k, size in bulky.items() if size > SMALL_FIELD_BYTES}
    if bulky:
        for key, size in bulky.items():
            del ev[key]
            cut[key] = f"dropped ({size:,} bytes)"
        yield {**ev, "trimmed": dict(cut)}

    headlines = ev.get("headlines")
    if not isinstance(headlines, list):
        if headlines is not None and _json_bytes(headlines) > SMALL_FIELD_BYTES:  # not a list: bulk like the rest
            cut["headlines"] = f"dropped ({_json_bytes(ev.pop('headlines')):,} bytes)"
            yield {**ev, "trimmed": dict(cut)}
        return
    short = [{**h, "title": h["title"][:TRIMMED_TITLE_CHARS] + "..."}
             if isinstance(h, dict) and isinstance(h.get("title"), str) and len(h["title"]) > TRIMMED_TITLE_CHARS
             else h for h in headlines]
    titles = f", titles cut to {TRIMMED_TITLE_CHARS} characters" if short != headlines else ""
    if titles:
        cut["headlines"] = titles.removeprefix(", ")
        yield {**ev, "headlines": short, "trimmed": dict(cut)}
    kept = len(short)
    while kept:
        kept //= 2
        cut["headlines"] = f"kept the {kept} most negative of {len(short)}{titles}"
        yield {**ev, "headlines": short[:kept], "trimmed": dict(cut)}
