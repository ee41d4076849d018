"""Prometheus metrics of the alert service, on a private registry (several services can live in one test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.transitions = Counter("marketmood_alert_transitions_total", "Alert state changes",
                                   ["rule", "severity", "kind"], registry=r)
        self.evaluations = Counter("marketmood_alert_evaluations_total", "Evaluation passes", ["outcome"], registry=r)
        self.evaluate_seconds = Histogram("marketmood_alert_evaluate_seconds", "Duration of one evaluation pass",
                                          registry=r)
        self.windows_judged = Counter("marketmood_alert_windows_judged_total", "Closed windows judged", ["rule"],
                                      registry=r)
        self.last_window_end = Gauge("marketmood_alert_last_window_end_seconds", "End of the last judged window",
                                     ["rule"], registry=r)
        self.notifications = Counter("marketmood_alert_notifications_total", "Notification attempts",
                                     ["notifier", "event", "outcome"], registry=r)
        self.outbox = Gauge("marketmood_alert_outbox_rows", "Outbox rows by notifier and status",
                            ["notifier", "status"], registry=r)
        self.watermark = Gauge("marketmood_alert_watermark_seconds",
                               "Event-time watermark of committed ingest (epoch s): windows before it are complete",
                               registry=r)
        self.watermark_lag = Gauge("marketmood_alert_watermark_lag_seconds",
                                   "Wall clock minus the committed event-time watermark", registry=r)
        self.open_alerts = Gauge("marketmood_alert_open", "Unresolved alerts by state", ["state"], registry=r)
