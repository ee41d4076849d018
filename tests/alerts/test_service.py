"""End to end on real PostgreSQL with real local receivers: an injected negative burst gives exactly one
trigger and one resolve per notifier, through restarts, replays, outages and silences."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from alerts import lifecycle
from alerts.rules import parse_rules
from alerts.service import AlertService
from storage import alerts as db
from tests.alerts.factories import (
    BASE,
    ITEMS,
    SECRET,
    SETTINGS,
    TOPIC,
    W,
    alerts_of,
    all_notifiers,
    article,
    assert_paged_once_then_resolved,
    escalation_rules,
    escalation_scenario,
    insert,
    rules_for,
    scenario,
    steady,
)


def test_burst_fires_once_and_resolves_once_per_notifier(engine, http_recorder, smtp_recorder) -> None:
    burst_start = scenario(engine)
    rules = rules_for(http_recorder, smtp_recorder)
    service = AlertService(engine, rules, SETTINGS)
    changes = []
    now = burst_start - timedelta(minutes=30)
    end = burst_start + timedelta(hours=2)
    restarted = False
    while now <= end:
        changes += service.evaluate(now)
        if not restarted and now >= burst_start + timedelta(minutes=15):
            # A restart mid-spike (new process, same DB) and a replayed batch must not double anything.
            service = AlertService(engine, rules, SETTINGS)
            insert(engine, ITEMS)  # every article redelivered (idempotent upsert: nothing counted twice)
            service.evaluate(now)  # same `now` again: a replayed evaluation
            restarted = True
        service.deliver()
        now += timedelta(seconds=W)

    alerts = alerts_of(engine, limit=10)
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert["scope"] == TOPIC and alert["state"] == "resolved" and alert["severity"] == "critical"
    ev = alert["evidence"]
    assert ev["current_share"] >= 0.5 and ev["baseline_share"] == pytest.approx(0.2, abs=0.03)
    assert ev["volume"] >= 8 and ev["p_value"] <= 0.001
    assert ev["headlines"] and ev["headlines"][0]["title"].startswith("Refinery fire")
    assert ev["headlines"][0]["url"].startswith("https://news.example.com/burst-")
    fired_at = datetime.fromisoformat(ev["fired_at"])
    assert burst_start < fired_at <= burst_start + timedelta(minutes=15)
    assert burst_start + timedelta(minutes=30) < alert["resolved_at"] <= burst_start + timedelta(minutes=60)
    assert [c["state"] for c in changes] == ["firing", "resolved"]

    # Exactly one trigger and one resolve per notifier.
    assert_paged_once_then_resolved(http_recorder, smtp_recorder, alert, secret=SECRET)
    with engine.connect() as conn:
        statuses = Counter(r["status"] for r in db.list_outbox(conn))
        assert statuses == {"delivered": 8}
        # Idle scopes are not stored; the rule cursor is.
        rows = conn.execute(text("SELECT scope_type, state FROM alert_scope_state")).all()
    assert {r[0] for r in rows} <= {"_cursor", "topic"}
    assert service.metrics.registry.get_sample_value(
        "marketmood_alert_notifications_total", {"notifier": "pd", "event": "resolve", "outcome": "ok"}) == 1


def test_notifier_outage_retries_with_backoff_and_drains(engine, http_recorder, smtp_recorder) -> None:
    burst_start = scenario(engine)
    service = AlertService(engine, rules_for(http_recorder, smtp_recorder), SETTINGS)
    http_recorder.status = 500  # webhook, Slack and PagerDuty answer 500; email works
    now = burst_start
    while not alerts_of(engine):
        service.evaluate(now)
        now += timedelta(seconds=W)
    t0 = datetime.now(timezone.utc) + timedelta(seconds=1)  # delivery clock, driven explicitly (no sleeps)
    report = service.deliver(t0)
    assert {d[1] for d in report.delivered} == {"mail"}
    assert sorted(f[1] for f in report.failed) == ["hook", "pd", "slack"]  # one attempt each, then back-off
    assert http_recorder.attempts == 3
    with engine.connect() as conn:
        rows = {r["notifier"]: r for r in db.list_outbox(conn)}
    assert rows["mail"]["status"] == "delivered"
    assert all(rows[n]["status"] == "pending" and rows[n]["next_attempt_at"] == t0 + timedelta(seconds=1)
               for n in ("hook", "slack", "pd"))
    http_recorder.stop()  # now the receiver is down entirely: connection refused
    assert service.deliver(t0 + timedelta(seconds=0.5)).failed == []  # not due yet (back-off)
    report = service.deliver(t0 + timedelta(seconds=1))
    assert report.delivered == [] and all("Connection refused" in f[3] for f in report.failed)
    with engine.connect() as conn:
        rows = {r["notifier"]: r for r in db.list_outbox(conn)}
    for n in ("hook", "slack", "pd"):  # exponential: 1 s, then 2 s
        assert rows[n]["attempts"] == 2 and rows[n]["next_attempt_at"] == t0 + timedelta(seconds=3)
    report = service.deliver(t0 + timedelta(seconds=3))
    with engine.connect() as conn:
        rows = {r["notifier"]: r for r in db.list_outbox(conn)}
    assert all(rows[n]["next_attempt_at"] == t0 + timedelta(seconds=7) for n in ("hook", "slack", "pd"))
    # Evaluation is not blocked meanwhile: the spike resolves while the notifiers are down.
    while alerts_of(engine)[0]["state"] != "resolved":
        service.evaluate(now)
        now += timedelta(seconds=W)
    # The resolve waits behind its trigger, which waits for the notifier to come back.
    report = service.deliver(t0 + timedelta(seconds=4))
    assert not [d for d in report.delivered if d[1] != "mail"]
    http_recorder.status = 200
    http_recorder.start()  # back, on the same port
    later = max(t0 + timedelta(seconds=7), datetime.now(timezone.utc) + timedelta(seconds=1))
    report = service.deliver(later)
    assert sorted(d[1:] for d in report.delivered if d[1] != "mail") == [
        ("hook", "resolve"), ("hook", "trigger"), ("pd", "resolve"), ("pd", "trigger"),
        ("slack", "resolve"), ("slack", "trigger")]
    for path in ("/hook", "/slack"):  # the trigger always precedes the resolve of the same notifier
        mine = [r.json() for r in http_recorder.requests if r.path == path]
        assert len(mine) == 2 and "RESOLVED" not in str(mine[0]) and "RESOLVED" in str(mine[1]), mine
    assert [r.json()["event_action"] for r in http_recorder.requests if r.path == "/pd"] == ["trigger", "resolve"]
    with engine.connect() as conn:
        assert Counter(r["status"] for r in db.list_outbox(conn)) == {"delivered": 8}


def test_silence_records_but_does_not_notify(engine, http_recorder, smtp_recorder) -> None:
    burst_start = scenario(engine)
    service = AlertService(engine, rules_for(http_recorder, smtp_recorder), SETTINGS)
    with engine.begin() as conn:
        db.create_silence(conn, "topic", TOPIC, timedelta(hours=3), by="ann", now=burst_start - timedelta(hours=1))
    now = burst_start
    while now <= burst_start + timedelta(hours=2):
        service.evaluate(now)
        service.deliver()
        now += timedelta(seconds=W)
    [alert] = alerts_of(engine)
    assert alert["state"] == "resolved" and alert["evidence"]["volume"] >= 8
    assert http_recorder.requests == [] and smtp_recorder.messages == []


def test_ack_sends_acknowledge_to_triggered_notifiers(engine, http_recorder, smtp_recorder) -> None:
    burst_start = scenario(engine)
    service = AlertService(engine, rules_for(http_recorder, smtp_recorder), SETTINGS)
    now = burst_start
    while not alerts_of(engine):
        service.evaluate(now)
        now += timedelta(seconds=W)
    service.deliver()
    alert_id = alerts_of(engine)[0]["id"]
    with engine.begin() as conn:
        acked = lifecycle.acknowledge(conn, alert_id, "ann")
    assert acked["state"] == "acknowledged"
    service.deliver()
    pd = [r.json() for r in http_recorder.requests if r.path == "/pd"]
    assert [p["event_action"] for p in pd] == ["trigger", "acknowledge"]
    while alerts_of(engine)[0]["state"] != "resolved":
        service.evaluate(now)
        now += timedelta(seconds=W)
    service.deliver()
    pd = [r.json() for r in http_recorder.requests if r.path == "/pd"]
    assert [p["event_action"] for p in pd] == ["trigger", "acknowledge", "resolve"]
    assert len({p["dedup_key"] for p in pd}) == 1


def _reminding_rules(http_recorder, smtp_recorder, *, minutes: int):
    """One critical topic rule on every notifier that reminds every ``minutes`` while it fires."""
    return parse_rules({
        **all_notifiers(http_recorder, smtp_recorder, secret=SECRET, routing_key="rk", to="desk@example.com"),
        "rules": [{"name": "spike", "scope": {"type": "topic", "include": [TOPIC]}, "severity": "critical",
                   "repeat_interval_minutes": minutes, "detection": {"cooldown_minutes": 60}}],
    })


def test_repeat_interval_reminds_while_firing_once_per_interval(engine, http_recorder, smtp_recorder) -> None:
    burst_start = scenario(engine)
    rules = _reminding_rules(http_recorder, smtp_recorder, minutes=10)
    service = AlertService(engine, rules, SETTINGS)
    now = burst_start
    while now <= burst_start + timedelta(hours=2):
        service.evaluate(now)
        service.evaluate(now)  # a replayed pass: no extra reminder
        service.deliver()
        now += timedelta(seconds=W)
    [alert] = alerts_of(engine)
    fired = datetime.fromisoformat(alert["evidence"]["fired_at"])
    # reminders due strictly before the resolve (the pass that resolves it sends no reminder)
    expected = math.ceil((alert["resolved_at"] - fired).total_seconds() / 600) - 1
    with engine.connect() as conn:
        events = sorted(r["event"] for r in db.list_outbox(conn) if r["notifier"] == "slack")
    assert expected >= 1 and events == sorted(["trigger", "resolve"] + [f"repeat:{k}" for k in range(1, expected + 1)])
    slack = [r.json()["text"] for r in http_recorder.requests if r.path == "/slack"]
    assert len(slack) == expected + 2 and "REMINDER 1, still firing" in slack[1] and "RESOLVED" in slack[-1]
    hooks = [r.headers["Idempotency-Key"] for r in http_recorder.requests if r.path == "/hook"]
    assert len(hooks) == len(set(hooks)) == expected + 2  # each reminder has its own key
    pd = [r.json() for r in http_recorder.requests if r.path == "/pd"]
    assert [p["event_action"] for p in pd] == ["trigger"] * (expected + 1) + ["resolve"]
    assert len({p["dedup_key"] for p in pd}) == 1  # PagerDuty folds reminders into the one incident


def _inhibition_rules(http_recorder, smtp_recorder):
    return parse_rules({
        **all_notifiers(http_recorder, smtp_recorder, secret=SECRET, routing_key="rk", to="desk@example.com"),
        "rules": [  # the ticker rule comes first in the file: evaluation order still puts its holder first
            {"name": "ticker-spike", "scope": {"type": "ticker", "include": ["XOM"]}, "severity": "critical",
             "inhibited_by": ["topic-spike"], "detection": {"cooldown_minutes": 60}},
            {"name": "topic-spike", "scope": {"type": "topic", "include": [TOPIC]}, "severity": "critical",
             "detection": {"cooldown_minutes": 60}},
        ],
    })


def test_ticker_alert_is_held_while_its_topic_alert_fires(engine, http_recorder, smtp_recorder) -> None:
    # The oil topic's news is all about XOM: a burst fires both the topic and the ticker rule.
    burst_start = BASE + timedelta(hours=6)
    items = steady(TOPIC, BASE, 72, per_window=6, neg_every=5, prefix="base", tickers=("XOM",))
    items += [article(f"burst-{w}-{j}", burst_start + timedelta(seconds=w * W + 25 + j * 45), TOPIC,
                      "neutral" if j in (2, 5) else "negative", title=f"Exxon refinery fire {w}-{j}",
                      tickers=("XOM",)) for w in range(6) for j in range(6)]
    items += steady(TOPIC, burst_start + timedelta(minutes=30), 24, per_window=6, neg_every=5, prefix="after",
                    tickers=("XOM",))
    insert(engine, items)
    service = AlertService(engine, _inhibition_rules(http_recorder, smtp_recorder), SETTINGS)
    now = burst_start
    while now <= burst_start + timedelta(hours=2):
        service.evaluate(now)
        service.deliver()
        now += timedelta(seconds=W)
    with engine.connect() as conn:
        alerts = {a["rule"]: a for a in db.list_alerts(conn)}
        outbox = db.list_outbox(conn)
    assert set(alerts) == {"topic-spike", "ticker-spike"}
    held = alerts["ticker-spike"]
    assert held["evidence"]["inhibited_by"]["alert_id"] == alerts["topic-spike"]["id"]
    assert held["evidence"]["inhibited_by"]["scope"] == TOPIC
    assert {r["alert_id"] for r in outbox} == {alerts["topic-spike"]["id"]}  # the held alert was never paged
    slack = [r.json()["text"] for r in http_recorder.requests if r.path == "/slack"]
    assert len(slack) == 2 and all(TOPIC in t for t in slack)


def test_held_ticker_alert_is_paged_once_when_its_topic_alert_resolves_first(engine, http_recorder,
                                                                            smtp_recorder) -> None:
    from alerts.lifecycle import reconcile_silences

    rules = _inhibition_rules(http_recorder, smtp_recorder)
    with engine.begin() as conn:
        topic = db.insert_alert(conn, rule="topic-spike", scope_type="topic", scope=TOPIC, severity="critical",
                                state="firing", dedup_key="k-topic", started_at=BASE, evidence={})
        held = db.insert_alert(conn, rule="ticker-spike", scope_type="ticker", scope="XOM", severity="critical",
                               state="silenced", dedup_key="k-xom", started_at=BASE,
                               evidence={"inhibited_by": {"alert_id": topic["id"]}})
        assert reconcile_silences(conn, rules, BASE) == []  # still held
        db.update_alert(conn, topic["id"], state="resolved", resolved_at=BASE)
        [released] = reconcile_silences(conn, rules, BASE)
        assert released["id"] == held["id"] and released["state"] == "firing"
        assert reconcile_silences(conn, rules, BASE) == []  # once
        rows = db.list_outbox(conn, alert_id=held["id"])
    assert sorted((r["notifier"], r["event"]) for r in rows) == sorted(
        (n, "trigger") for n in ("hook", "slack", "pd", "mail"))


def test_an_escalation_of_a_silenced_alert_is_recorded_not_sent(engine, http_recorder, smtp_recorder) -> None:
    shift, burst = escalation_scenario(engine)
    service = AlertService(engine, escalation_rules(http_recorder, smtp_recorder), SETTINGS)
    with engine.begin() as conn:
        db.create_silence(conn, "topic", TOPIC, timedelta(hours=6), by="ann", now=shift - timedelta(hours=1))
    now = shift - timedelta(minutes=30)
    while now <= burst + timedelta(hours=1):
        service.evaluate(now)
        service.deliver()
        now += timedelta(seconds=W)
    [alert] = alerts_of(engine)
    assert alert["state"] == "silenced" and len(alert["evidence"]["escalations"]) == 1
    assert http_recorder.requests == [] and smtp_recorder.messages == []
    with engine.connect() as conn:
        assert db.list_outbox(conn) == []


def test_a_new_event_on_an_open_alert_is_sent_once_as_an_escalation(engine, http_recorder, smtp_recorder) -> None:
    # A new normal keeps the alert open; a burst on top of it: on-call gets one escalation with the new evidence.
    shift, burst = escalation_scenario(engine)
    rules = escalation_rules(http_recorder, smtp_recorder)
    service = AlertService(engine, rules, SETTINGS)
    now = shift - timedelta(minutes=30)
    while now <= burst + timedelta(hours=1):
        service.evaluate(now)
        if burst + timedelta(minutes=10) <= now < burst + timedelta(minutes=10 + W / 60):
            service = AlertService(engine, rules, SETTINGS)  # a restart mid-escalation ...
            service.evaluate(now)  # ... and a replayed pass: nothing is escalated twice
        service.deliver()
        now += timedelta(seconds=W)

    [alert] = alerts_of(engine)
    assert alert["state"] == "firing"
    ev = alert["evidence"]
    assert shift < datetime.fromisoformat(ev["fired_at"]) <= shift + timedelta(minutes=15)
    [escalation] = ev["escalations"]
    assert burst < datetime.fromisoformat(escalation["fired_at"]) <= burst + timedelta(minutes=15)
    assert escalation["baseline_share"] == pytest.approx(0.5, abs=0.08)  # judged against the new normal
    assert escalation["p_value"] <= 0.001 and escalation["headlines"][0]["title"].startswith("Pipeline explosion")
    with engine.connect() as conn:
        events = Counter((r["notifier"], r["event"]) for r in db.list_outbox(conn))
    assert events == Counter({(n, e): 1 for n in ("hook", "slack", "pd", "mail") for e in ("trigger", "escalate:1")})
    slack = [r.json()["text"] for r in http_recorder.requests if r.path == "/slack"]
    assert len(slack) == 2 and "ESCALATED (1)" in slack[1] and "ESCALATED" not in slack[0]
    assert "Pipeline explosion" in str([r.json() for r in http_recorder.requests if r.path == "/slack"][1])
    hooks = [r for r in http_recorder.requests if r.path == "/hook"]
    assert len({r.headers["Idempotency-Key"] for r in hooks}) == 2 and hooks[1].json()["escalation"] == 1
    pd = [r.json() for r in http_recorder.requests if r.path == "/pd"]
    assert [p["event_action"] for p in pd] == ["trigger", "trigger"]
    assert {p["dedup_key"] for p in pd} == {alert["dedup_key"]}  # PagerDuty folds it into the open incident
    assert len(smtp_recorder.messages) == 2


@pytest.mark.parametrize("change", ["exclude", "drop_from_include", "remove_rule"])
def test_an_alert_whose_scope_is_no_longer_judged_is_resolved_with_the_reason(engine, http_recorder, smtp_recorder,
                                                                              change) -> None:
    """On-call excludes a noisy topic while it fires (or removes the rule): no window judges that scope again,
    so before, its incident stayed open and reminders went on for ever."""
    burst_start = scenario(engine)
    notifiers = all_notifiers(http_recorder, smtp_recorder, secret=SECRET, routing_key="rk", to="desk@example.com")
    service = AlertService(engine, rules_for(http_recorder, smtp_recorder), SETTINGS)
    now = burst_start - timedelta(minutes=30)
    while not alerts_of(engine):
        assert now < burst_start + timedelta(hours=1), "the burst never fired"
        service.evaluate(now)
        now += timedelta(seconds=W)
    service.deliver()
    scope = {"exclude": {"type": "topic", "include": "all", "exclude": [TOPIC]},
             "drop_from_include": {"type": "topic", "include": ["Macro"]},
             "remove_rule": {"type": "ticker", "include": "all"}}[change]
    name = "other" if change == "remove_rule" else "spike"
    edited = parse_rules({**notifiers, "rules": [{"name": name, "scope": scope, "severity": "critical",
                                                  "repeat_interval_minutes": 5}]})
    service = AlertService(engine, edited, SETTINGS)  # the service restarted with the edited rules
    service.evaluate(now)
    service.deliver()
    [alert] = alerts_of(engine)
    assert alert["state"] == "resolved" and alert["resolved_at"] == now
    assert TOPIC in alert["evidence"]["retired"]["reason"] or "no longer in the rules" in alert["evidence"]["retired"]["reason"]
    assert_paged_once_then_resolved(http_recorder, smtp_recorder, alert, secret=SECRET)
    with engine.connect() as conn:
        states = conn.execute(text("SELECT count(*) FROM alert_scope_state WHERE scope = :s"), {"s": TOPIC}).scalar_one()
    assert states == 0
    service.evaluate(now + timedelta(hours=1))  # nothing more: no reminder, no second resolve
    service.deliver()
    assert_paged_once_then_resolved(http_recorder, smtp_recorder, alert, secret=SECRET)


def test_a_silence_set_while_evaluation_lags_holds_the_page_of_an_earlier_window(engine, http_recorder,
                                                                                 smtp_recorder) -> None:
    """Evaluation catches up on the burst's windows 40 minutes late; on-call silenced the topic a minute before.
    Before: the silence was checked at the window's end only, so everyone was paged, then the alert muted."""
    burst_start = scenario(engine)
    service = AlertService(engine, rules_for(http_recorder, smtp_recorder), SETTINGS)
    now = burst_start - timedelta(minutes=30)
    while now < burst_start:
        service.evaluate(now)
        now += timedelta(seconds=W)
    late = burst_start + timedelta(minutes=40)
    with engine.begin() as conn:
        db.create_silence(conn, "topic", TOPIC, timedelta(hours=3), by="ann", now=late - timedelta(minutes=1))
    service.evaluate(late)  # judges the burst's windows now
    service.deliver()
    [alert] = alerts_of(engine)
    assert alert["state"] == "silenced" and alert["evidence"]["fired_at"] < (late - timedelta(minutes=1)).isoformat()
    assert http_recorder.requests == [] and smtp_recorder.messages == []


def test_one_broken_rule_does_not_stop_the_others_from_paging(engine, http_recorder, smtp_recorder) -> None:
    """A detector state another version wrote badly makes one rule raise; before, the exception ended the whole
    pass, so no rule after it (nor the silence reconciliation) ran until someone fixed the row."""
    burst_start = scenario(engine)
    notifiers = all_notifiers(http_recorder, smtp_recorder, secret=SECRET, routing_key="rk", to="desk@example.com")
    rules = parse_rules({**notifiers, "rules": [
        {"name": "broken", "scope": {"type": "ticker", "include": "all"}, "severity": "warning"},
        {"name": "spike", "scope": {"type": "topic", "include": [TOPIC, "Macro"]}, "severity": "critical",
         "detection": {"cooldown_minutes": 60}}]})
    with engine.begin() as conn:
        db.save_scope_state(conn, "broken", "ticker", "XOM", {"phase": "firing", "frozen_baseline_end": "garbage"})
    service = AlertService(engine, rules, SETTINGS)
    assert [r.name for r in rules.evaluation_order()][0] == "broken"  # judged first
    now, errors = burst_start - timedelta(minutes=30), 0
    while now <= burst_start + timedelta(hours=2):
        try:
            service.evaluate(now)
        except TypeError:
            errors += 1
        service.deliver()
        now += timedelta(seconds=W)
    assert errors > 0  # the broken rule still fails, loudly
    [alert] = alerts_of(engine)
    assert alert["rule"] == "spike" and alert["state"] == "resolved"
    assert_paged_once_then_resolved(http_recorder, smtp_recorder, alert, secret=SECRET)


def test_an_alert_released_from_a_silence_is_not_reminded_at_once(engine, http_recorder, smtp_recorder) -> None:
    """Silenced when it fired, released 25 minutes later: before, its trigger was followed in the same minute by
    "REMINDER 2" (the count ran from the fire). The first reminder now comes an interval after the release."""
    burst_start = scenario(engine)
    rules = _reminding_rules(http_recorder, smtp_recorder, minutes=10)
    with engine.begin() as conn:
        db.create_silence(conn, "topic", TOPIC, timedelta(minutes=40), by="ann", now=burst_start - timedelta(minutes=10))
    service = AlertService(engine, rules, SETTINGS)
    now, seen, arrivals = burst_start, 0, []
    while now <= burst_start + timedelta(hours=2):
        service.evaluate(now)
        service.deliver()
        slack = [r.json()["text"] for r in http_recorder.requests if r.path == "/slack"]
        arrivals += [(now, text) for text in slack[seen:]]
        seen = len(slack)
        now += timedelta(seconds=W)
    trigger_at = next(t for t, text in arrivals if "REMINDER" not in text and "RESOLVED" not in text)
    reminders = [t for t, text in arrivals if "REMINDER" in text]
    assert trigger_at >= burst_start + timedelta(minutes=30)  # released with the silence, not before
    assert reminders and reminders[0] - trigger_at >= timedelta(minutes=10), arrivals
    [alert] = alerts_of(engine)
    assert alert["state"] == "resolved" and alert["evidence"]["paged_at"] == trigger_at.isoformat()


def test_an_alert_whose_silence_ends_while_it_fires_is_paged_again(engine, http_recorder, smtp_recorder) -> None:
    """Fired and paged, then silenced by on-call, and the silence ends while it still fires: the release pages
    (the docstring of reconcile_silences promised it), but the outbox key (alert, notifier, "trigger") swallowed
    the second trigger, so Slack, e-mail and PagerDuty never heard the alert was live again."""
    burst_start = scenario(engine)
    rules = parse_rules({
        **all_notifiers(http_recorder, smtp_recorder, secret=SECRET, routing_key="rk", to="desk@example.com"),
        "rules": [{"name": "spike", "scope": {"type": "topic", "include": [TOPIC]}, "severity": "critical",
                   "detection": {"cooldown_minutes": 60}}],
    })
    service = AlertService(engine, rules, SETTINGS)
    now, silenced_at = burst_start, None
    while now <= burst_start + timedelta(hours=2):
        service.evaluate(now)
        service.deliver()
        if silenced_at is None and any(r.path == "/slack" for r in http_recorder.requests):
            silenced_at = now  # on-call mutes it for two windows, right after the page
            with engine.begin() as conn:
                db.create_silence(conn, "topic", TOPIC, timedelta(seconds=2 * W), by="ann", now=now)
        now += timedelta(seconds=W)
    slack = [r.json()["text"] for r in http_recorder.requests if r.path == "/slack"]
    assert silenced_at is not None and len([t for t in slack if "SILENCE ENDED, still firing" in t]) == 1, slack
    pagerduty = [r.json() for r in http_recorder.requests if r.path == "/pd"]
    assert [p["event_action"] for p in pagerduty] == ["trigger", "trigger", "resolve"], pagerduty
    assert len({p["dedup_key"] for p in pagerduty}) == 1  # the same incident, re-raised
    assert len([m for m in smtp_recorder.messages if "SILENCE ENDED" in m["Subject"]]) == 1
    hook = [r.json() for r in http_recorder.requests if r.path == "/hook"]
    assert [(h["event"], h.get("unsilenced")) for h in hook] == [("trigger", None), ("trigger", 1), ("resolve", None)]
    [alert] = alerts_of(engine)
    assert alert["state"] == "resolved" and alert["evidence"]["unsilenced"] == 1


def test_outbox_gauge_drops_to_zero_when_a_status_empties(engine, http_recorder, smtp_recorder) -> None:
    """``marketmood_alert_outbox_rows{status="pending"}`` must fall back to 0 once the backlog is delivered (and
    ``dead`` once re-driven): before, a (notifier, status) with no rows left was not set at all, so the gauge kept
    its last count for ever and an alert on a stuck outbox never cleared."""
    burst_start = scenario(engine)
    service = AlertService(engine, rules_for(http_recorder, smtp_recorder), SETTINGS)
    now = burst_start
    while not alerts_of(engine):
        service.evaluate(now)
        now += timedelta(seconds=W)

    def gauge(notifier: str, status: str) -> float | None:
        return service.metrics.registry.get_sample_value("marketmood_alert_outbox_rows",
                                                         {"notifier": notifier, "status": status})

    assert all(gauge(n, "pending") == 1 for n in ("hook", "slack", "pd", "mail"))
    assert len(service.deliver().delivered) == 4
    service.evaluate(now)  # the next pass refreshes the gauges
    assert all(gauge(n, "pending") == 0 and gauge(n, "delivered") == 1 for n in ("hook", "slack", "pd", "mail"))


def test_notification_metrics_label_reminders_by_kind_not_by_number(engine, http_recorder, smtp_recorder) -> None:
    """``marketmood_alert_notifications_total{event}`` takes the event kind (repeat, escalate, unsilence), not the
    outbox event: before, every reminder number made a new time series (``repeat:1``, ``repeat:2``, ... for as
    long as an alert kept firing), an unbounded label."""
    burst_start = scenario(engine)
    rules = _reminding_rules(http_recorder, smtp_recorder, minutes=5)
    service = AlertService(engine, rules, SETTINGS)
    now = burst_start
    while not alerts_of(engine):
        service.evaluate(now)
        now += timedelta(seconds=W)
    for _ in range(3):  # two reminders, each delivered
        service.deliver()
        service.evaluate(now)
        now += timedelta(seconds=W)
    service.deliver()
    with engine.connect() as conn:
        assert {"repeat:1", "repeat:2"} <= {r["event"] for r in db.list_outbox(conn) if r["notifier"] == "slack"}
    samples = [s for metric in service.metrics.registry.collect() if metric.name == "marketmood_alert_notifications"
               for s in metric.samples if s.name.endswith("_total")]
    assert {s.labels["event"] for s in samples} == {"trigger", "repeat"}
    assert service.metrics.registry.get_sample_value(
        "marketmood_alert_notifications_total", {"notifier": "slack", "event": "repeat", "outcome": "ok"}) >= 2


def test_a_non_finite_score_does_not_blind_the_rule(engine, http_recorder, smtp_recorder) -> None:
    """One NaN score (a broken model version, a bad replay) made the span's mean score NaN; the evidence was then
    not valid JSON, PostgreSQL refused the alert, and the rule failed on that window in every pass for ever (the
    cursor never passes it), blind for all its scopes. Now the non-finite value is left out of the evidence."""
    import dataclasses

    burst_start = scenario(engine)
    bad = article("nan-score", burst_start + timedelta(seconds=40), TOPIC, "negative", title="Refinery output halted")
    insert(engine, [dataclasses.replace(bad, score=float("nan"), p_negative=float("nan"))])
    service = AlertService(engine, rules_for(http_recorder, smtp_recorder), SETTINGS)
    now = burst_start
    while now <= burst_start + timedelta(minutes=20) and not alerts_of(engine):
        service.evaluate(now)
        now += timedelta(seconds=W)
    [alert] = alerts_of(engine)
    assert alert["scope"] == TOPIC and alert["evidence"]["mean_score"] is None
    service.deliver()
    assert len(http_recorder.requests) == 3 and len(smtp_recorder.messages) == 1  # paged (hook, slack, pd, mail)
