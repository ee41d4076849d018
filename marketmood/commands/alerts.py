"""``marketmood alerts``: list, ack, silence, unsilence, outbox, check-rules, and run (the service loop)."""

from __future__ import annotations

import getpass
import json
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import click
from prometheus_client import start_http_server

from alerts import lifecycle
from alerts.config import AlertConfig
from alerts.rules import RulesError, load_rules
from alerts.service import AlertService
from marketmood.dashboards.macros import as_stored
from marketmood.logs import configure_logging
from marketmood.runtime import database_engine, sigterm_as_interrupt
from marketmood.settings import ConfigError, Settings, get_settings
from models.labels import UnknownLabelError
from storage import alerts as db

# Ids and row limits are PostgreSQL bigints: a larger number reached the database and came back as a traceback.
_BIGINT = click.IntRange(0, 2**63 - 1)
MAX_SILENCE = timedelta(days=36_500)  # 100 years; one ending after the year 9999 crashed reading it back (datetime)

_DURATION_RE = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*$")


def parse_duration(value: str) -> timedelta:
    """'2h', '90m', '1d12h', '30s' -> timedelta (a bare number means minutes)."""
    if value.strip().isdigit():
        value = f"{int(value)}m"
    m = _DURATION_RE.match(value)
    if not m or not any(m.groups()):
        raise click.BadParameter(f"{value!r} is not a duration like 2h, 90m, 1d12h")
    d, h, mi, s = (int(x or 0) for x in m.groups())
    try:
        duration = timedelta(days=d, hours=h, minutes=mi, seconds=s)
    except OverflowError:
        raise click.BadParameter(f"{value!r} is longer than a timedelta holds") from None
    if duration <= timedelta(0):
        raise click.BadParameter(f"{value!r} is not a positive duration")
    if duration > MAX_SILENCE:
        raise click.BadParameter(f"{value!r} is longer than the longest silence, {MAX_SILENCE.days}d (100 years)")
    return duration


def _duration_option(_ctx: click.Context, _param: click.Parameter, value: str) -> timedelta:
    """Parse ``--for`` before anything starts (the embedded database takes seconds)."""
    return parse_duration(value)


def alert_config(settings: Settings) -> AlertConfig:
    """The alert service's config from the application settings (the one place they are mapped)."""
    a = settings.alerts
    if a.claim_timeout_s < 2 * a.delivery_timeout_s:
        raise ConfigError(f"alerts.claim_timeout_s ({a.claim_timeout_s}) must be at least twice "
                          f"alerts.delivery_timeout_s ({a.delivery_timeout_s}): a slow send is not a dead sender")
    return AlertConfig(
        rules_path=a.rules_path, evaluate_interval_s=a.evaluate_interval_s,
        outbox_poll_interval_s=a.outbox_poll_interval_s, window_s=a.window_s, late_grace_s=a.late_grace_s,
        allowed_lateness_s=a.allowed_lateness_s, watermark_topic=settings.topics.raw if a.use_watermark else None,
        max_catchup_windows=a.max_catchup_windows, delivery_timeout_s=a.delivery_timeout_s,
        retry_base_s=a.retry_base_s, retry_max_s=a.retry_max_s, max_attempts=a.max_attempts,
        claim_timeout_s=a.claim_timeout_s, plots_dir=a.plots_dir or settings.home / "alert-plots",
        runbook_url=a.runbook_url, grafana_url=settings.grafana.url,
    )


def _scope(topic: str | None, ticker: str | None) -> tuple[str, str]:
    if bool(topic) == bool(ticker):
        raise click.UsageError("give exactly one of --topic or --ticker")
    kind: Literal["topic", "ticker"] = "topic" if topic else "ticker"
    try:
        (value,) = as_stored(kind, [topic or ticker or ""])
    except UnknownLabelError as exc:
        raise click.BadParameter(str(exc), param_hint="--topic") from None
    if not value:
        raise click.BadParameter("a blank ticker matches nothing", param_hint="--ticker")
    return kind, value


def _shares(ev: dict[str, Any]) -> str:
    """'55% vs 20%': the evidence's negative share against its baseline ('-' when either is missing)."""
    share, base = ev.get("current_share"), ev.get("baseline_share")
    return f"{share:.0%} vs {base:.0%}" if isinstance(share, float) and isinstance(base, float) else "-"


def _fmt_alert(a: dict[str, Any]) -> str:
    ev = a.get("evidence") or {}
    shares = _shares(ev)
    resolved = a["resolved_at"].strftime("%Y-%m-%d %H:%M") if a.get("resolved_at") else "-"
    line = (f"{a['id']:>6}  {a['state']:<12} {a['severity']:<8} {a['scope_type']}:{a['scope']:<28} "
            f"{a['started_at']:%Y-%m-%d %H:%M}  {resolved:<16}  {shares:<12} n={ev.get('volume', '-')}  {a['rule']}")
    escalations = ev.get("escalations") or []
    if escalations:  # a new event on top of the open alert: on-call wants the latest one at a glance
        last = escalations[-1]
        line += f"  escalated x{len(escalations)} (latest {_shares(last)} at {last.get('fired_at', '?')})"
    return line


@click.group("alerts")
def alerts_group() -> None:
    """Negative-sentiment spike alerts: inspect, acknowledge, silence, and run the alert service."""


@alerts_group.command("list")
@click.option("--state", type=click.Choice(["open", "firing", "acknowledged", "silenced", "resolved"]), default=None,
              help="Only alerts in this state ('open' = not resolved).")
@click.option("--limit", type=_BIGINT, default=50, show_default=True, help="Show at most this many alerts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the full evidence).")
def list_command(state: str | None, limit: int, as_json: bool) -> None:
    """List alerts, newest first."""
    with database_engine(get_settings()) as engine, engine.connect() as conn:
        rows = db.list_alerts(conn, state=state, limit=limit)
        silences = db.list_silences(conn)
    if as_json:
        click.echo(json.dumps({"alerts": rows, "silences": silences}, default=str, indent=2))
        return
    if not rows:
        click.echo("no alerts")
    else:
        click.echo(f"{'id':>6}  {'state':<12} {'severity':<8} {'scope':<34} {'started':<17} {'resolved':<16}  "
                   f"{'neg share':<12} volume  rule")
        for a in rows:
            click.echo(_fmt_alert(a))
    for s in silences:
        click.echo(f"silence #{s['id']}: {s['scope_type']}:{s['scope']} until {s['ends_at']:%Y-%m-%d %H:%M %Z}"
                   f" by {s['created_by']}" + (f" ({s['reason']})" if s.get("reason") else ""))


@alerts_group.command("ack")
@click.argument("alert_id", type=_BIGINT)
@click.option("--by", default=None, help="Who acknowledges (default: the OS user).")
def ack_command(alert_id: int, by: str | None) -> None:
    """Acknowledge alert ALERT_ID (notifiers that got the trigger are told; PagerDuty stops escalating)."""
    with database_engine(get_settings()) as engine, engine.begin() as conn:
        alert = lifecycle.acknowledge(conn, alert_id, by or getpass.getuser())
    if alert is None:
        raise click.ClickException(f"no alert with id {alert_id}")
    click.echo(_fmt_alert(alert))


@alerts_group.command("silence")
@click.option("--topic", default=None, help="Topic to silence (any spelling of one of the 20 topics).")
@click.option("--ticker", default=None, help="Ticker to silence, e.g. AAPL.")
@click.option("--for", "duration", default="2h", show_default=True, callback=_duration_option,
              help="How long, e.g. 30m, 2h, 1d (a bare number means minutes).")
@click.option("--reason", default=None, help="Why (shown in `alerts list`).")
@click.option("--by", default=None, help="Who silences (default: the OS user).")
def silence_command(topic: str | None, ticker: str | None, duration: timedelta, reason: str | None,
                    by: str | None) -> None:
    """Mute notifications for a topic or ticker (alerts are still recorded, as 'silenced')."""
    scope_type, scope = _scope(topic, ticker)
    with database_engine(get_settings()) as engine, engine.begin() as conn:
        s = db.create_silence(conn, scope_type, scope, duration, by=by or getpass.getuser(),
                              reason=reason)
    click.echo(f"silence #{s['id']}: {scope_type}:{scope} until {s['ends_at']:%Y-%m-%d %H:%M %Z}")


@alerts_group.command("unsilence")
@click.option("--topic", default=None, help="Cancel every active silence of this topic.")
@click.option("--ticker", default=None, help="Cancel every active silence of this ticker.")
@click.option("--id", "silence_id", type=_BIGINT, default=None, help="Cancel one silence by id.")
def unsilence_command(topic: str | None, ticker: str | None, silence_id: int | None) -> None:
    """Cancel a silence (by id, or every active one of a topic/ticker)."""
    with database_engine(get_settings()) as engine, engine.begin() as conn:
        if silence_id is not None:
            n = db.cancel_silences(conn, silence_id=silence_id)
        else:
            scope_type, scope = _scope(topic, ticker)
            n = db.cancel_silences(conn, scope_type=scope_type, scope=scope)
    click.echo(f"cancelled {n} silence(s)")


@alerts_group.command("outbox")
@click.option("--alert", "alert_id", type=_BIGINT, default=None, help="Only this alert's notifications.")
@click.option("--dead", is_flag=True,
              help="Only rows that need a human: 'dead' (a permanent failure such as HTTP 4xx) and 'unknown' "
                   "(the sender died mid-send on Slack/email, so it may or may not have arrived).")
@click.option("--limit", type=_BIGINT, default=50, show_default=True, help="Show at most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the payload).")
def outbox_command(alert_id: int | None, dead: bool, limit: int, as_json: bool) -> None:
    """Show notification delivery status (pending rows retry with exponential back-off)."""
    with database_engine(get_settings()) as engine, engine.connect() as conn:
        rows = db.list_outbox(conn, alert_id=alert_id, statuses=("dead", "unknown") if dead else None, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        click.echo("no notifications" + (" need attention" if dead else ""))
    for r in rows:
        click.echo(f"{r['id']:>6} alert {r['alert_id']:>5} {r['notifier']:<20} {r['event']:<12} {r['status']:<9} "
                   f"attempts={r['attempts']} next={r['next_attempt_at']:%H:%M:%S} {r['last_error'] or ''}")
    if dead and rows:
        click.echo("re-queue with: marketmood alerts redrive ID [ID ...]  (or --all)")


@alerts_group.command("redrive")
@click.argument("outbox_ids", nargs=-1, type=_BIGINT)
@click.option("--all", "all_dead", is_flag=True, help="Re-queue every dead and unknown row.")
def redrive_command(outbox_ids: tuple[int, ...], all_dead: bool) -> None:
    """Re-queue dead/unknown notifications OUTBOX_IDS (ids from `alerts outbox --dead`), after fixing the
    notifier, or after checking that an 'unknown' Slack/email message did not arrive: re-driving it may send
    a copy."""
    if not outbox_ids and not all_dead:
        raise click.UsageError("give outbox ids (see `marketmood alerts outbox --dead`) or --all")
    with database_engine(get_settings()) as engine, engine.begin() as conn:
        rows = db.redrive(conn, outbox_ids=outbox_ids, all_dead=all_dead)
    missing = sorted(set(outbox_ids) - {r["id"] for r in rows})
    click.echo(f"re-queued {len(rows)} notification(s)")
    if missing:
        raise click.ClickException(f"not dead/unknown (or no such row): {', '.join(map(str, missing))}")


@alerts_group.command("check-rules")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def check_rules_command(path: str | None) -> None:
    """Validate the rules file PATH (default: the configured or bundled one) and print a summary."""
    settings = get_settings()
    try:
        rules = load_rules(Path(path) if path else settings.alerts.rules_path)
        rules.check_window(alert_config(settings).window_s)
    except RulesError as exc:
        raise ConfigError(str(exc)) from None
    for r in rules.rules:
        click.echo(f"rule {r.name}: {r.scope.type} {r.scope.include} severity={r.severity} -> "
                   f"{', '.join(rules.route(r.severity)) or '(recorded only)'}")


@alerts_group.command("run")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Prometheus port [default: settings alerts.metrics_port, 9108]; 0 disables.")
@click.option("--once", is_flag=True, help="Evaluate and deliver once, then exit.")
def run_command(metrics_port: int | None, once: bool) -> None:
    """Run the alert service: judge complete windows, fire/resolve alerts, deliver notifications. Several
    replicas may run at once: each state change is still notified once."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    config = alert_config(settings)
    try:
        rules = load_rules(settings.alerts.rules_path)  # validated before anything starts
        rules.check_window(config.window_s)
    except RulesError as exc:
        raise ConfigError(str(exc)) from None
    # SIGTERM unwinds like Ctrl-C from here on: it used to kill the process while the embedded database started
    # (or during --once), leaving that PostgreSQL running without its owner.
    with sigterm_as_interrupt(), database_engine(settings) as engine:
        service = AlertService(engine, rules, config)
        if once:
            changed = service.evaluate()
            report = service.deliver()
            click.echo(f"{len(changed)} alert change(s), {len(report.delivered)} notification(s) delivered, "
                       f"{len(report.failed)} failed")
            return
        port = settings.alerts.metrics_port if metrics_port is None else metrics_port
        if port:
            start_http_server(port, registry=service.metrics.registry)
        service.start()
        click.echo(f"alert service running ({len(rules.rules)} rules, metrics on :{port}); Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            service.stop()


COMMANDS = [alerts_group]
