"""Two alert-service replicas on one real PostgreSQL, evaluating and delivering at the same moments:
each state change is still paged exactly once per notifier (rule leadership by advisory lock, the cursor
row lock, and per-row outbox claims)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest

from alerts.service import AlertService
from storage import alerts as db
from storage.db import make_engine
from tests.alerts.factories import SETTINGS, W, escalation_rules, escalation_scenario, rules_for, scenario


def _run_in_lockstep(replicas: list[AlertService], steps: list) -> None:
    """Both replicas judge the same window at the same moment, then deliver at the same moment."""
    barrier = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def run(service: AlertService) -> None:
        try:
            for now in steps:
                barrier.wait(30)
                service.evaluate(now)
                barrier.wait(30)
                service.deliver()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(s,)) for s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not errors, errors
    for s in replicas:
        s.deliver()


@pytest.mark.timeout(120)
def test_two_replicas_page_once_per_state_change(db_url, http_recorder, smtp_recorder) -> None:
    engines = [make_engine(db_url) for _ in range(2)]
    try:
        burst_start = scenario(engines[0])
        rules = rules_for(http_recorder, smtp_recorder)
        replicas = [AlertService(e, rules, SETTINGS) for e in engines]
        steps = [burst_start - timedelta(minutes=15) + timedelta(seconds=W * i) for i in range(30)]
        _run_in_lockstep(replicas, steps)

        with engines[0].connect() as conn:
            alerts = db.list_alerts(conn)
            outbox = db.list_outbox(conn)
        assert [(a["scope"], a["state"]) for a in alerts] == [("Energy | Oil", "resolved")]
        per_path = Counter((r.path, r.json().get("event") or r.json().get("event_action") or
                            ("RESOLVED" in r.json()["text"])) for r in http_recorder.requests)
        assert per_path == Counter({("/hook", "trigger"): 1, ("/hook", "resolve"): 1, ("/pd", "trigger"): 1,
                                    ("/pd", "resolve"): 1, ("/slack", False): 1, ("/slack", True): 1}), per_path
        assert len(smtp_recorder.messages) == 2
        assert Counter(r["status"] for r in outbox) == {"delivered": 8}
        # every window judged by exactly one replica, never by both
        judged = [s.metrics.registry.get_sample_value("marketmood_alert_windows_judged_total", {"rule": "spike"}) or 0
                  for s in replicas]
        print("windows judged per replica:", judged)
        assert sum(judged) == len(steps), judged
    finally:
        for e in engines:
            e.dispose()


@pytest.mark.timeout(120)
def test_two_replicas_send_an_escalation_once(db_url, http_recorder, smtp_recorder) -> None:
    engines = [make_engine(db_url) for _ in range(2)]
    try:
        shift, burst = escalation_scenario(engines[0])
        replicas = [AlertService(e, escalation_rules(http_recorder, smtp_recorder), SETTINGS) for e in engines]
        steps = [shift - timedelta(minutes=15) + timedelta(seconds=W * i) for i in range(int(4.25 * 3600) // W)]
        _run_in_lockstep(replicas, steps)
        with engines[0].connect() as conn:
            [alert] = db.list_alerts(conn)
            outbox = db.list_outbox(conn)
        assert len(alert["evidence"]["escalations"]) == 1
        assert Counter((r["notifier"], r["event"]) for r in outbox) == Counter(
            {(n, e): 1 for n in ("hook", "slack", "pd", "mail") for e in ("trigger", "escalate:1")})
        slack = [r.json()["text"] for r in http_recorder.requests if r.path == "/slack"]
        assert len(slack) == 2 and "ESCALATED (1)" in slack[1], slack
        assert len(http_recorder.requests) == 6 and len(smtp_recorder.messages) == 2
    finally:
        for e in engines:
            e.dispose()


@pytest.mark.timeout(60)
def test_a_silence_update_never_reopens_an_alert_another_replica_resolved(db_url, http_recorder, smtp_recorder) -> None:
    """Replica B lists a firing alert as newly silenced while replica A's resolve of it is still uncommitted;
    B must act on the row as it is once A commits. Before: B's update waited for A's lock, then overwrote the
    resolve (state silenced, resolved_at set), and the alert stayed open for ever after."""
    from alerts import lifecycle
    from tests.alerts.factories import BASE

    engine_a, engine_b, watcher = (make_engine(db_url) for _ in range(3))
    try:
        with engine_a.begin() as conn:
            alert = db.insert_alert(conn, rule="spike", scope_type="ticker", scope="XOM", severity="critical",
                                    state="firing", dedup_key="k-silence-race", started_at=BASE, evidence={})
            db.create_silence(conn, "ticker", "XOM", timedelta(hours=1), by="ana", now=BASE)
        rules = rules_for(http_recorder, smtp_recorder)
        errors: list[BaseException] = []

        def replica_b() -> None:
            try:
                with engine_b.begin() as conn:
                    lifecycle.reconcile_silences(conn, rules, BASE + timedelta(minutes=10))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        with engine_a.begin() as conn_a:  # replica A resolves the alert; its transaction is still open
            db.lock_alert(conn_a, alert["id"])
            db.update_alert(conn_a, alert["id"], state="resolved", resolved_at=BASE + timedelta(minutes=9))
            thread = threading.Thread(target=replica_b)
            thread.start()
            waiting = 0
            for _ in range(200):  # until B waits on A's row lock
                with watcher.connect() as conn:
                    waiting = conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").scalar_one()
                if waiting:
                    break
                thread.join(0.05)
            assert waiting, "replica B never reached A's lock"
        thread.join(30)
        assert not errors, errors
        with engine_a.connect() as conn:
            (after,) = [a for a in db.list_alerts(conn) if a["id"] == alert["id"]]
            outbox = db.list_outbox(conn, alert_id=alert["id"])
        assert after["state"] == "resolved" and outbox == []
    finally:
        for e in (engine_a, engine_b, watcher):
            e.dispose()
