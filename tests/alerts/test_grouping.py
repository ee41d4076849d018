"""Grouping on real PostgreSQL with real local receivers: alerts of one rule that fire (or resolve) in one
evaluation reach Slack, email and the webhook as one message each, PagerDuty as one event per alert; a
member's later notification never overtakes the group that carries its trigger."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from alerts import lifecycle
from alerts.notifiers.email import email_message
from alerts.notifiers.slack import slack_message
from alerts.payloads import delivery_key, group_payload
from alerts.rules import parse_rules
from alerts.service import AlertService
from storage import alerts as db
from tests.alerts.factories import BASE, SECRET, SETTINGS, W, alerts_of, all_notifiers, article, insert, steady

TOPICS = ("Energy | Oil", "Macro", "Markets")


def _simultaneous_bursts(engine) -> datetime:
    """6 h of steady news in three topics, then the same 30-min negative burst in all three at once."""
    items = []
    burst_start = BASE + timedelta(hours=6)
    for k, topic in enumerate(TOPICS):
        items += steady(topic, BASE, 72, per_window=6, neg_every=5, prefix=f"base{k}")
        for w in range(6):
            for j in range(6):
                t = burst_start + timedelta(seconds=w * W + 25 + j * 45)
                items.append(article(f"burst{k}-{w}-{j}", t, topic, "neutral" if j in (2, 5) else "negative",
                                     title=f"{topic} shock number {k}-{w}-{j} <!channel>"))
        items += steady(topic, burst_start + timedelta(minutes=30), 24, per_window=6, neg_every=5, prefix=f"after{k}")
    insert(engine, items)
    return burst_start


def _rules(http_recorder, smtp_recorder, *, group: bool = True):
    return parse_rules({
        **all_notifiers(http_recorder, smtp_recorder, secret=SECRET, routing_key="rk", to="desk@example.com"),
        "rules": [{"name": "spike", "scope": {"type": "topic", "include": list(TOPICS)}, "severity": "critical",
                   "group": group, "detection": {"cooldown_minutes": 60}}],
    })


def _run(engine, rules, burst_start: datetime) -> list[dict]:
    service = AlertService(engine, rules, SETTINGS)
    changes, now = [], burst_start - timedelta(minutes=30)
    while now <= burst_start + timedelta(hours=2):
        changes += service.evaluate(now)
        service.deliver()
        now += timedelta(seconds=W)
    return changes


def test_simultaneous_scopes_go_out_as_one_message_per_channel(engine, http_recorder, smtp_recorder) -> None:
    burst_start = _simultaneous_bursts(engine)
    changes = _run(engine, _rules(http_recorder, smtp_recorder), burst_start)
    alerts = alerts_of(engine, limit=10)
    assert sorted(a["scope"] for a in alerts) == sorted(TOPICS) and {a["state"] for a in alerts} == {"resolved"}
    assert len({a["group_key"] for a in alerts}) == 1
    assert Counter(c["state"] for c in changes) == {"firing": 3, "resolved": 3}
    ids = sorted(a["id"] for a in alerts)

    hook = [r.json() for r in http_recorder.requests if r.path == "/hook"]
    assert [h["event"] for h in hook] == ["trigger", "resolve"], [h["summary"] for h in hook]
    for h in hook:
        assert h["group"]["size"] == 3 and sorted(m["alert"]["id"] for m in h["alerts"]) == ids
        assert h["alert"]["id"] == ids[0]  # the lead: single-alert readers still find one alert
    assert "3 topics" in hook[0]["summary"]
    slack = [r.json() for r in http_recorder.requests if r.path == "/slack"]
    assert len(slack) == 2 and "RESOLVED" in slack[1]["text"]
    body = str(slack[0]["blocks"])
    assert all(topic.replace("&", "&amp;") in body for topic in TOPICS)
    assert "<!channel>" not in body  # members' headlines are escaped like single alerts'
    mails = smtp_recorder.messages
    assert len(mails) == 2 and "3 topics" in mails[0]["Subject"]
    assert len([p for p in mails[0].walk() if p.get_content_type() == "image/png"]) == 3  # one plot per member
    # PagerDuty: one incident lifecycle per alert (its dedup_key is per alert), the group key in the details.
    pd = [r.json() for r in http_recorder.requests if r.path == "/pd"]
    assert Counter(p["event_action"] for p in pd) == {"trigger": 3, "resolve": 3}
    assert len({p["dedup_key"] for p in pd}) == 3
    assert {p["payload"]["custom_details"]["group_key"] for p in pd if p["event_action"] == "trigger"} == \
        {alerts[0]["group_key"]}
    with engine.connect() as conn:
        statuses = Counter((r["notifier"], r["status"]) for r in db.list_outbox(conn))
    # per grouped channel: 2 delivered leads (trigger, resolve) carrying 4 grouped member rows
    for channel in ("hook", "slack", "mail"):
        assert statuses[(channel, "delivered")] == 2 and statuses[(channel, "grouped")] == 4, statuses
    assert statuses[("pd", "delivered")] == 6


def test_group_false_sends_one_message_per_alert(engine, http_recorder, smtp_recorder) -> None:
    burst_start = _simultaneous_bursts(engine)
    _run(engine, _rules(http_recorder, smtp_recorder, group=False), burst_start)
    slack = [r.json() for r in http_recorder.requests if r.path == "/slack"]
    assert len(slack) == 6 and all("blocks" in s for s in slack)
    assert len(smtp_recorder.messages) == 6
    assert not any("group" in r.json() for r in http_recorder.requests if r.path == "/hook")


def _alert(conn, scope: str) -> dict:
    return db.insert_alert(conn, rule="spike", scope_type="topic", scope=scope, severity="critical", state="firing",
                           dedup_key=f"k/{scope}", started_at=BASE, evidence={"fired_at": BASE.isoformat()},
                           group_key="spike/critical/slack")


def test_member_resolve_waits_for_the_group_that_carries_its_trigger(engine, http_recorder, smtp_recorder) -> None:
    rules = parse_rules({
        "notifiers": {"slack": {"type": "slack", "url": http_recorder.url("/slack")}},
        "routing": {"critical": ["slack"]},
        "rules": [{"name": "spike", "scope": {"type": "topic", "include": ["Macro", "Markets"]},
                   "severity": "critical"}],
    })
    [rule] = rules.rules
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        lead, member = _alert(conn, "Macro"), _alert(conn, "Markets")
        for a in (lead, member):
            lifecycle.enqueue(conn, a, ["slack"], "trigger")
        assert lifecycle.group_notifications(conn, rules, rule, [lead, member], "trigger") == 1
        lifecycle.enqueue(conn, db.update_alert(conn, member["id"], state="resolved", resolved_at=now),
                          db.triggered_notifiers(conn, member["id"]), "resolve")
    with engine.begin() as conn:
        lead_row = db.claim_one(conn, now + timedelta(seconds=5), "t")  # the group's send is in flight ...
        assert lead_row["alert_id"] == lead["id"] and lead_row["event"] == "trigger"
    with engine.begin() as conn:
        assert db.claim_one(conn, now + timedelta(seconds=5), "t2") is None  # ... so the member's resolve waits
        db.mark_failed(conn, lead_row["id"], "HTTP 503", now + timedelta(hours=1), dead=False, claimed_by="t")
    with engine.begin() as conn:
        assert db.claim_one(conn, now + timedelta(seconds=5), "t2") is None  # the group failed and retries later: still waiting
    with engine.begin() as conn:
        row = db.claim_one(conn, now + timedelta(hours=2), "t")
        assert row["id"] == lead_row["id"] and row["payload"]["group"]["size"] == 2
        db.mark_delivered(conn, row["id"], now, "t")
    with engine.begin() as conn:
        row = db.claim_one(conn, now + timedelta(hours=2), "t")
        assert (row["alert_id"], row["event"]) == (member["id"], "resolve")


def test_group_payload_renders_for_every_channel() -> None:
    members = [{"id": i, "rule": "spike", "scope_type": "ticker", "scope": s, "severity": "warning", "state": "firing",
                "dedup_key": f"k{i}", "started_at": BASE, "group_key": "g",
                "evidence": {"current_share": 0.6, "baseline_share": 0.2, "volume": 30, "p_value": 0.001,
                             "headlines": [{"title": "<http://evil|click> @here", "url": "javascript:x"}],
                             "links": {"grafana": f"https://grafana.example.com/d/x?var-ticker={s}"}}}
               for i, s in enumerate(("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "META", "GOOG"), start=1)]
    payload = group_payload(members, "trigger", "g")
    assert payload["summary"].startswith("[WARNING] negative-sentiment spike in 7 tickers: AAPL, MSFT")
    assert "and 2 more" in payload["summary"]
    assert delivery_key(payload) != delivery_key({**payload, "group": None})  # a group has its own key
    text = str(slack_message(payload))
    assert "<http://evil" not in text and "@here" not in text and "javascript:" not in text
    assert text.count("Grafana panel") == 7
    mail = email_message(payload, "mm@example.com", ("desk@example.com",), [])
    assert mail.get_content().count("Acknowledge: marketmood alerts ack") == 7
    with pytest.raises(ValueError):
        group_payload(members[:1], "trigger", "g")
