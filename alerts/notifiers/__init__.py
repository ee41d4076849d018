"""Notifiers (webhook, Slack, PagerDuty, email) built from the rules file's ``notifiers`` section."""

from __future__ import annotations

from alerts.notifiers.base import DeliveryError, Notifier
from alerts.notifiers.email import EmailNotifier
from alerts.notifiers.pagerduty import PagerDutyNotifier
from alerts.notifiers.slack import SlackNotifier
from alerts.notifiers.webhook import WebhookNotifier
from alerts.rules import EmailConfig, PagerDutyConfig, RulesFile, SlackConfig, WebhookConfig


def build_notifiers(rules: RulesFile, timeout_s: float = 5.0) -> dict[str, Notifier]:
    """One notifier per configured name."""
    out: dict[str, Notifier] = {}
    for name, cfg in rules.notifiers.items():
        if isinstance(cfg, WebhookConfig):
            out[name] = WebhookNotifier(name, cfg.url, cfg.secret, cfg.headers, timeout_s)
        elif isinstance(cfg, SlackConfig):
            out[name] = SlackNotifier(name, cfg.url, timeout_s)
        elif isinstance(cfg, PagerDutyConfig):
            out[name] = PagerDutyNotifier(name, cfg.routing_key, cfg.events_url, cfg.source, timeout_s)
        elif isinstance(cfg, EmailConfig):
            out[name] = EmailNotifier(
                name, cfg.host, cfg.port, cfg.from_addr, cfg.to, username=cfg.username, password=cfg.password,
                starttls=cfg.starttls, use_ssl=cfg.ssl, attach_plot=cfg.attach_plot, timeout_s=timeout_s,
            )
    return out


__all__ = ["DeliveryError", "Notifier", "build_notifiers"]
