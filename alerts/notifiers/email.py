"""SMTP email: plain-text evidence, headline links, and the evidence plot as a PNG attachment."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import structlog

from alerts.notifiers.base import DeliveryError
from alerts.payloads import delivery_key, members

log = structlog.get_logger("marketmood.alerts.email")

#: Plots attached to one message: a group of hundreds of tickers (a sell-off under a per-ticker rule) would
#: otherwise be tens of MB, over the relay's size limit, and take minutes to render inside the send.
MAX_PLOTS = 10


def _alert_lines(alert: dict[str, Any]) -> list[str]:
    ev = alert.get("evidence") or {}
    lines = [
        f"Alert #{alert['id']}  rule {alert['rule']}  severity {alert['severity']}  state {alert['state']}",
        f"Scope: {alert['scope_type']} {alert['scope']}",
        f"Started: {alert['started_at']}" + (f"  Resolved: {alert['resolved_at']}" if alert.get("resolved_at") else ""),
        f"Negative share: {ev.get('current_share')} vs baseline {ev.get('baseline_share')} "
        f"(volume {ev.get('volume')}, baseline volume {ev.get('baseline_volume')}, p={ev.get('p_value')}, z={ev.get('z')})",
        "", "Top negative headlines:",
    ]
    for h in ev.get("headlines", []):
        lines.append(f"  - {h.get('title')} (score {h.get('score')}) {h.get('url') or ''}".rstrip())
    links = ev.get("links") or {}
    lines += [""] + [f"{label}: {links[k]}" for k, label in (("runbook", "Runbook"), ("grafana", "Grafana"))
                     if links.get(k)]
    lines += [f"Acknowledge: marketmood alerts ack {alert['id']}"]
    return lines


def email_message(payload: dict[str, Any], from_addr: str, to: tuple[str, ...],
                  plots: list[tuple[int, bytes]]) -> EmailMessage:
    """Build the message (pure; tested directly). A group lists every member; ``plots`` are (alert id, PNG)
    attachments."""
    alert = payload["alert"]
    msg = EmailMessage()
    # A header cannot hold a line break (EmailMessage raises): any run of whitespace in the summary becomes one space.
    msg["Subject"] = " ".join(f"[MarketMood] {payload['summary']}".split())
    msg["From"] = from_addr
    msg["To"] = ", ".join(to)
    msg["X-MarketMood-Dedup-Key"] = str(alert["dedup_key"])
    # Stable per (alert, event): a copy that ever got through twice threads as one message in mail clients.
    digest = hashlib.sha256(delivery_key(payload).encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<{digest}@marketmood>"
    lines = [payload["summary"], ""]
    if plots and len(members(payload)) > len(plots):
        lines += [f"Plots attached for {len(plots)} of {len(members(payload))} alerts (the first ones).", ""]
    for member in members(payload):
        lines += _alert_lines(member["alert"]) + [""]
    msg.set_content("\n".join(lines).rstrip() + "\n")
    for alert_id, image in plots:
        msg.add_attachment(image, maintype="image", subtype="png", filename=f"alert-{alert_id}.png")
    return msg


class EmailNotifier:
    kind = "email"

    def __init__(self, name: str, host: str, port: int, from_addr: str, to: tuple[str, ...], *,
                 username: str | None = None, password: str | None = None, starttls: bool = False,
                 use_ssl: bool = False, attach_plot: bool = True, timeout_s: float = 5.0) -> None:
        self.name, self.host, self.port = name, host, port
        self.from_addr, self.to = from_addr, to
        self._username, self._password = username, password
        self._starttls, self._ssl, self._attach_plot = starttls, use_ssl, attach_plot
        self._timeout = timeout_s

    def send(self, payload: dict[str, Any]) -> None:
        plots: list[tuple[int, bytes]] = []
        if self._attach_plot and payload["event"] == "trigger":
            from alerts.plot import evidence_png  # matplotlib: only when a plot is attached

            for member in members(payload)[:MAX_PLOTS]:
                image = evidence_png(member["alert"])
                if image:
                    plots.append((member["alert"]["id"], image))
        msg = email_message(payload, self.from_addr, self.to, plots)
        refused: dict[str, Any] = {}
        stage = "connect"  # how far the conversation got: the message may be accepted once DATA is under way
        try:
            # Both TLS modes verify the server's certificate and host name. SMTP_SSL without a context uses
            # one that verifies nothing: anyone on the path could pose as the relay and read the login.
            smtp_conn = (smtplib.SMTP_SSL(self.host, self.port, timeout=self._timeout,
                                          context=ssl.create_default_context())
                         if self._ssl else smtplib.SMTP(self.host, self.port, timeout=self._timeout))
            with smtp_conn as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password or "")
                stage = "send"
                refused = smtp.send_message(msg)
                stage = "accepted"
        except (OSError, smtplib.SMTPException) as exc:
            if stage != "accepted":
                raise _delivery_error(exc, maybe_delivered=stage == "send") from exc
            log.warning("email_quit_failed_after_accept", notifier=self.name, error=repr(exc))  # it was sent
        if refused:  # sent to the others; a retry would page them twice, so this is logged, not retried
            log.warning("email_recipients_refused", notifier=self.name, refused=sorted(refused))


def _delivery_error(exc: OSError | smtplib.SMTPException, *, maybe_delivered: bool) -> DeliveryError:
    """How the outbox treats an SMTP failure: a 4xx answer is transient and a 5xx permanent (either way the
    server said no); no answer once the message was under way may mean it arrived (``maybe_delivered``)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", retryable=exc.smtp_code < 500)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):  # every recipient refused: permanent only if all said 5xx
        codes = [code for code, _ in exc.recipients.values()]
        return DeliveryError(f"SMTP refused every recipient: {exc.recipients!r}",
                             retryable=any(code < 500 for code in codes))
    return DeliveryError(f"{type(exc).__name__}: {exc}", maybe_delivered=maybe_delivered)
