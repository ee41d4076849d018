"""The alert service: judge complete windows from the database, apply transitions, deliver the outbox.

``AlertService.evaluate(now)`` is one idempotent pass (safe to call from a loop, a test or the demo); the
per-rule cursor and detector states live in ``alert_scope_state`` and commit with the alerts and outbox
rows, so a restart resumes exactly where the last committed pass stopped. A window is judged only when it
is complete: its end plus ``allowed_lateness_s`` lies behind the workers' committed event-time watermark
(``storage.progress``), so a burst that arrives while the workers lag waits for them instead of being
judged on partial data. Alerts of one rule that fire (or resolve) in one pass are folded into one
notification per Slack/email/webhook receiver (``lifecycle.group_notifications``). Several replicas may run: each rule is evaluated under a transaction-scoped
advisory lock (one leader per rule and pass) and the outbox is claimed row by row, so each state change is
paged once. ``deliver(now)`` sends due notifications. ``start()``/``stop()`` run both in two daemon threads
(delivery never delays evaluation). With
a plots directory (``plots_dir``: the argument, else ``AlertConfig.plots_dir``), every fired alert's
evidence plot is saved there as a PNG.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine

from alerts import lifecycle
from alerts.config import AlertConfig
from alerts.detector import ScopeState, advance
from alerts.metrics import AlertMetrics
from alerts.notifiers import Notifier, build_notifiers
from alerts.outbox import DeliveryReport, OutboxSender
from alerts.payloads import LinkConfig
from alerts.rules import RuleConfig, RulesFile, load_rules
from alerts.windows import Counts, WindowSeries
from storage import alerts as db
from storage.progress import event_time_watermark, read_progress

log = structlog.get_logger("marketmood.alerts")


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


class AlertService:
    def __init__(self, engine: Engine, rules: RulesFile | None = None, config: AlertConfig | Any = None, *,
                 notifiers: dict[str, Notifier] | None = None, metrics: AlertMetrics | None = None,
                 plots_dir: Path | None = None, settings: Any = None) -> None:
        # ``settings=`` is the older keyword (the demo passes its settings section; any object with
        # AlertConfig's attribute names works).
        self.config = AlertConfig.coerce(config if config is not None else settings)
        self.settings = self.config
        # Where fired alerts' evidence PNGs go; None = not saved (callers resolve the <home>/alert-plots default).
        self.plots_dir = plots_dir if plots_dir is not None else self.config.plots_dir
        self.rules = rules or load_rules(self.config.rules_path)
        self.rules.check_window(self.config.window_s)
        self.engine = engine
        self.metrics = metrics or AlertMetrics()
        self.links = LinkConfig(self.config.runbook_url, self.config.grafana_url, self.config.grafana_dashboard_uid)
        self.notifiers = notifiers if notifiers is not None else build_notifiers(
            self.rules, self.config.delivery_timeout_s)
        self.sender = OutboxSender(
            engine, self.notifiers, base_s=self.config.retry_base_s, max_s=self.config.retry_max_s,
            max_attempts=self.config.max_attempts, claim_timeout_s=self.config.claim_timeout_s,
            # the event's kind as the label: "repeat:17" -> "repeat" (one series per reminder number is unbounded)
            on_result=lambda n, e, ok: self.metrics.notifications.labels(
                n, e.split(":", 1)[0], "ok" if ok else "error").inc(),
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._outbox_seen: set[tuple[str, str]] = set()  # outbox gauge labels set so far (see _refresh_gauges)

    # --- evaluation -------------------------------------------------------------------------------------

    def evaluate(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Judge every complete window (closed by ``now`` minus the grace, and behind the watermark minus the
        allowed lateness); returns changed alert rows."""
        now = now or datetime.now(timezone.utc)
        started = time.perf_counter()
        changed: list[dict[str, Any]] = []
        try:
            with self.engine.begin() as conn:
                # before the rules run, so an alert the rules no longer judge gets no reminder on the way out
                if db.try_lead(conn, "_retire"):
                    for alert in lifecycle.retire_unjudged(conn, self.rules, now):
                        log.info("alert_retired", alert_id=alert["id"], rule=alert["rule"], scope=alert["scope"],
                                 reason=alert["evidence"]["retired"]["reason"])
                        changed.append(alert)
            with self.engine.connect() as conn:
                last_closed = self.judgeable_until(conn, now)
            failed: list[Exception] = []
            if last_closed is not None:
                for rule in self.rules.evaluation_order():
                    try:
                        transitions = self._evaluate_rule(rule, now, last_closed)  # committed
                    except Exception as exc:  # noqa: BLE001 - one broken rule must not blind the others
                        log.exception("alert_rule_failed", rule=rule.name)
                        failed.append(exc)
                        continue
                    self._save_plots(transitions)
                    changed += transitions
            with self.engine.begin() as conn:
                if db.try_lead(conn, "_silences"):  # one replica reconciles silences per pass
                    changed += lifecycle.reconcile_silences(conn, self.rules, now)
                self._refresh_gauges(conn)
            if failed:  # the pass is an error (metrics, the run loop's log) once every other rule has run
                raise failed[0]
        except Exception:
            self.metrics.evaluations.labels("error").inc()
            raise
        self.metrics.evaluations.labels("ok").inc()
        self.metrics.evaluate_seconds.observe(time.perf_counter() - started)
        return changed

    def judgeable_until(self, conn: Connection, now: datetime) -> int | None:
        """End (epoch s) of the last window complete at ``now``, or None when nothing may be judged (no
        ingest progress committed yet). Also publishes the watermark and its lag as metrics."""
        w = self.config.window_s
        by_clock = (_epoch(now) - int(self.config.late_grace_s)) // w * w
        if self.config.watermark_topic is None:
            return by_clock
        watermark = event_time_watermark(read_progress(conn, self.config.watermark_topic), now)
        if watermark is None:
            log.info("alerts_waiting_for_ingest_progress", topic=self.config.watermark_topic)
            return None
        self.metrics.watermark.set(watermark.timestamp())
        self.metrics.watermark_lag.set(max(0.0, (now - watermark).total_seconds()))
        by_watermark = (_epoch(watermark) - int(self.config.allowed_lateness_s)) // w * w
        return min(by_clock, by_watermark)

    def _evaluate_rule(self, rule: RuleConfig, now: datetime, last_closed: int) -> list[dict[str, Any]]:
        w = self.config.window_s
        p = rule.detection
        scope_type = rule.scope.type
        changed: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            if not db.try_lead(conn, f"rule/{rule.name}"):
                return changed  # another replica is judging this rule right now
            cursor = db.get_cursor(conn, rule.name)  # row lock: one evaluator per rule at a time
            if cursor is None:
                cursor = last_closed - w
            if last_closed <= cursor:
                return changed  # nothing new is complete yet (e.g. the workers lag)
            first = max(cursor + w, last_closed - (self.config.max_catchup_windows - 1) * w)
            ends = list(range(first, last_closed + 1, w))
            if not ends:
                return changed
            states = {scope: ScopeState.from_json(s) for (st, scope), s in db.load_scope_states(conn, rule.name).items()
                      if st == scope_type}
            span = p.span_windows * w
            oldest_baseline_end = min([ends[0] - span] + [s.frozen_baseline_end for s in states.values()
                                                         if s.frozen_baseline_end is not None])
            fetch_start = oldest_baseline_end - int(p.baseline_hours * 3600)
            counts = db.window_counts(conn, scope_type, lifecycle.ts(fetch_start), lifecycle.ts(ends[-1]), w,
                                      rule.scope.scopes())
            excluded = rule.scope.excluded()
            by_event: dict[str, list[dict[str, Any]]] = {}  # this pass's changes, grouped per event below
            for scope in sorted((set(counts) | set(states)) - excluded):
                series = WindowSeries(w, {start: Counts(*c) for start, c in counts.get(scope, {}).items()})
                state = states.get(scope, ScopeState())
                if state.is_idle(ends[0]) and series.range(ends[0] - span, ends[-1]).n == 0:
                    continue  # nothing new and nothing pending: skip cheaply
                new_state, transitions, _ = advance(p, state, series, ends)
                for tr in transitions:
                    if tr.kind == "resolve":
                        alert = lifecycle.resolve(conn, rule, scope_type, scope, tr)
                    else:
                        evidence = lifecycle.build_evidence(conn, rule, scope_type, scope, tr, series, self.links)
                        alert = (lifecycle.fire(conn, self.rules, rule, scope_type, scope, tr, evidence, now=now)
                                 if tr.kind == "fire" else lifecycle.escalate(conn, rule, scope_type, scope, tr, evidence))
                    if alert is not None:
                        changed.append(alert)
                        if tr.kind != "escalate":  # escalations are rare and per alert: not grouped
                            by_event.setdefault("trigger" if tr.kind == "fire" else "resolve", []).append(alert)
                        self.metrics.transitions.labels(rule.name, rule.severity, tr.kind).inc()
                        log.info("alert_" + tr.kind, alert_id=alert["id"], rule=rule.name, scope=scope,
                                 scope_type=scope_type, at=lifecycle.ts(tr.at).isoformat())
                persist = None if new_state.is_idle(ends[-1]) else new_state.to_json()
                if persist is not None or scope in states:
                    db.save_scope_state(conn, rule.name, scope_type, scope, persist)
            for event, alerts in by_event.items():
                lifecycle.group_notifications(conn, self.rules, rule, alerts, event)
            db.set_cursor(conn, rule.name, ends[-1])
            lifecycle.enqueue_reminders(conn, rule, lifecycle.ts(ends[-1]))
        self.metrics.windows_judged.labels(rule.name).inc(len(ends))
        self.metrics.last_window_end.labels(rule.name).set(ends[-1])
        return changed

    def _save_plots(self, alerts: list[dict[str, Any]]) -> None:
        """Evidence PNG of each newly fired alert, after its commit; a failure is logged, never raised (the
        plot is a convenience: evaluation and notification must not depend on it)."""
        if self.plots_dir is None:
            return
        from alerts.plot import save_evidence_png

        for alert in alerts:
            if alert.get("resolved_at") is not None:
                continue
            try:
                path = save_evidence_png(alert, self.plots_dir)
            except Exception as exc:  # noqa: BLE001 - matplotlib missing, disk full ...
                log.warning("alert_plot_failed", alert_id=alert.get("id"), error=f"{type(exc).__name__}: {exc}")
                continue
            if path is not None:
                log.info("alert_plot_saved", alert_id=alert.get("id"), path=str(path))

    def _refresh_gauges(self, conn: Any) -> None:
        counts = db.outbox_counts(conn)
        # A (notifier, status) with no rows left is absent from the counts: set it to 0, or the gauge keeps its
        # last value for ever (a drained backlog or a re-driven dead row would still show, and page, as stuck).
        for key in self._outbox_seen - counts.keys():
            self.metrics.outbox.labels(*key).set(0)
        for (notifier, status), n in counts.items():
            self.metrics.outbox.labels(notifier, status).set(n)
        self._outbox_seen |= counts.keys()
        open_by_state = {"firing": 0, "acknowledged": 0, "silenced": 0}
        for alert in db.list_alerts(conn, state="open", limit=10_000):
            open_by_state[alert["state"]] = open_by_state.get(alert["state"], 0) + 1
        for state, n in open_by_state.items():
            self.metrics.open_alerts.labels(state).set(n)

    # --- delivery ---------------------------------------------------------------------------------------

    def deliver(self, now: datetime | None = None) -> DeliveryReport:
        """Send due notifications, pass after pass, until a pass delivers nothing (a delivered trigger can make
        its resolve due in the next pass; failed rows are pushed back, so this ends)."""
        total = DeliveryReport()
        while True:
            report = self.sender.deliver_due(now, stop=self._stop.is_set)  # stop() ends it between sends
            total.delivered += report.delivered
            total.failed += report.failed
            total.dead += report.dead
            if not report.delivered or self._stop.is_set():
                return total

    # --- loops ------------------------------------------------------------------------------------------

    def _loop(self, fn: Any, interval_s: float, name: str) -> None:
        while not self._stop.is_set():
            try:
                fn()
            except Exception as exc:  # the database may be restarting: log, wait, retry
                log.warning(f"{name}_failed", error=f"{type(exc).__name__}: {exc}")
            self._stop.wait(interval_s)

    def start(self) -> None:
        """Run evaluation and delivery in two daemon threads until ``stop()``."""
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._loop, args=(self.evaluate, self.config.evaluate_interval_s, "evaluate"),
                             name="alerts-evaluate", daemon=True),
            threading.Thread(target=self._loop, args=(self.deliver, self.config.outbox_poll_interval_s, "deliver"),
                             name="alerts-deliver", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)
        self._threads = []
