"""``marketmood demo``: embedded broker + database, the worker, a generated news feed, spike alerts and a live view.

Everything runs from a fresh clone: the feed is ``streams.demo_news`` (text the project wrote), the
broker and database are embedded (``marketmood.runtime.services``), the worker is a child process
(``marketmood worker``, so faust owns its own event loop and signals), and the alert service runs in
this process with demo-scale settings (10-second windows, a 3-minute baseline: ``alerts/rules.demo.yaml``
unless ``MARKETMOOD_ALERTS__RULES_PATH`` names your rules). The feed is calm, then one story turns sharply
negative, then calm again, so an alert fires and then resolves while you watch. Ctrl-C or the end of the run
stops everything; a summary is written to ``<home>/demo-summary.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from alerts.rules import RulesError, load_rules
from alerts.service import AlertService
from marketmood.commands.alerts import alert_config
from marketmood.runtime import Services, services, sigterm_as_interrupt, usable_home
from marketmood.settings import REPO_ROOT, AlertSettings, ConfigError, Settings
from storage import alerts as alerts_db
from storage.articles import topic_summary
from storage.db import make_engine
from streams.demo_news import DemoStream
from streams.publisher import LiveClock, PublishError, make_producer, publish
from streams.sources import in_run, read_records, retime, run_id
from streams.sources import since as records_since

log = structlog.get_logger(__name__)

DEMO_RULES_PATH = REPO_ROOT / "alerts" / "rules.demo.yaml"
DEFAULT_PHASES = (40.0, 30.0, 50.0)  # calm, burst, recovery (seconds)
SETTLE_S = 90.0  # after the feed ends, wait at most this long for open alerts to resolve


def start_worker_process(settings: Settings, svc: Services, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **svc.env(), "MARKETMOOD_HOME": str(settings.home), "PYTHONUNBUFFERED": "1"}
    logf = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "marketmood.cli", "worker"], cwd=REPO_ROOT, env=env,
                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # gone already
        pass
    proc.wait(10)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int | None:
    """SIGTERM (the worker drains its batch), SIGKILL if it does not exit in time.

    Also SIGKILL when the wait itself is interrupted (a second Ctrl-C while the worker drains): the worker runs in
    its own session, so the terminal's Ctrl-C never reaches it, and it outlived the demo, holding its metrics port
    (the next demo's worker could not start) and retrying a broker and database that were gone.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return None
    except BaseException:
        _kill(proc)
        raise


# --- alerts ---------------------------------------------------------------------------------------------


def demo_alert_settings(settings: Settings) -> AlertSettings:
    """The user's alert settings at demo scale: 10-s windows judged 3 s after they close (and once the
    workers' watermark is 2 s past them), every 2 s.

    Rules: the user's file when ``alerts.rules_path`` is set, else ``alerts/rules.demo.yaml`` (a 3-minute
    baseline: the default rules' 6 h baseline would never fire in a run of minutes). Evidence plots go to
    ``alerts.plots_dir``, else ``<home>/alert-plots``.
    """
    a = settings.alerts
    return a.model_copy(update={
        "rules_path": a.rules_path or DEMO_RULES_PATH,
        "window_s": 10,
        "evaluate_interval_s": 2.0,
        "late_grace_s": 3.0,
        "allowed_lateness_s": 2.0,  # judged once the workers' watermark is 2 s past a window's end
        "outbox_poll_interval_s": 1.0,
        "plots_dir": a.plots_dir or settings.home / "alert-plots",
    })


def _endpoint(cfg: Any) -> str:
    """Where a notifier sends, without secrets (webhook paths carry tokens: show scheme and host only)."""
    kind = getattr(cfg, "type", "?")
    if kind == "email":
        return f"email {cfg.host}:{cfg.port} -> {', '.join(cfg.to)}"
    url = getattr(cfg, "events_url", None) or getattr(cfg, "url", "")
    try:  # host and port only: the netloc would show a password in the URL's user-info (https://user:pw@host)
        parts = urlsplit(url)
        host = parts.hostname
        where = f"{host}:{parts.port}" if host and parts.port else host
    except ValueError:  # a port that is no number: say nothing rather than the raw URL
        where = None
    return f"{kind} {parts.scheme}://{where}/..." if where else kind


def describe_routing(rules: Any) -> list[str]:
    """One line per routed severity: which notifiers and where they deliver."""
    lines = []
    for severity, names in sorted(rules.routing.items()):
        if names:
            targets = "; ".join(f"{n} ({_endpoint(rules.notifiers[n])})" for n in names)
            lines.append(f"{severity} -> {targets}")
    return lines


def _pct(x: Any) -> str:
    return "?" if x is None else f"{100 * float(x):.0f}%"


def _hms(value: Any) -> str:
    if value is None:
        return "--:--:--"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(timezone.utc).strftime("%H:%M:%S")


def _scope(alert: dict[str, Any]) -> str:
    return f"{alert['scope_type']} [bold]{escape(str(alert['scope']))}[/]"


def fire_lines(alert: dict[str, Any]) -> list[str]:
    ev = alert.get("evidence") or {}
    delta = ev.get("delta")
    span_s = None
    if ev.get("span_start") and ev.get("span_end"):
        span_s = (datetime.fromisoformat(ev["span_end"]) - datetime.fromisoformat(ev["span_start"])).total_seconds()
    lines = [
        f"{_hms(ev.get('fired_at'))}  [bold red]FIRING[/]    {_scope(alert)}  ({escape(alert['rule'])}, "
        f"{alert['severity']}): negative {_pct(ev.get('current_share'))} vs baseline {_pct(ev.get('baseline_share'))}"
        + (f" ({100 * delta:+.0f} pts)" if delta is not None else "")
        + f", {ev.get('negative', '?')}/{ev.get('volume', '?')} articles"
        + (f" in the last {span_s:.0f} s" if span_s else "")
        + f" (baseline {ev.get('baseline_volume', '?')}), p={ev.get('p_value', '?')}"
    ]
    for h in (ev.get("headlines") or [])[:2]:
        lines.append(f"          [dim]\"{escape(str(h.get('title')))}\" (score {h.get('score', 0):+.2f})[/]")
    return lines


def resolve_lines(alert: dict[str, Any]) -> list[str]:
    ev = alert.get("evidence") or {}
    at = ev.get("at_resolve") or {}
    lasted = ""
    if alert.get("resolved_at") is not None and ev.get("fired_at"):
        lasted = f" after {(alert['resolved_at'] - datetime.fromisoformat(ev['fired_at'])).total_seconds():.0f} s"
    if at.get("volume"):
        now = (f"negative {_pct(at.get('current_share'))} vs baseline {_pct(at.get('baseline_share'))}, "
               f"{at['volume']} articles in the current span")
    else:
        now = f"no articles in the current span (baseline {_pct(at.get('baseline_share'))} negative)"
    return [f"{_hms(alert.get('resolved_at'))}  [bold green]RESOLVED[/]  {_scope(alert)}{lasted}: {now}"]


@dataclass
class AlertWatch:
    """Follows the alerts table for the alerts of this demo run (ids above ``after_id``), turning state changes
    into event lines for the live panel."""

    engine: Any
    rules: Any
    after_id: int = 0
    states: dict[int, str] = field(default_factory=dict)
    alerts: dict[int, dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    fired: int = 0
    resolved: int = 0

    @classmethod
    def start(cls, engine: Engine, rules: Any) -> AlertWatch:
        with engine.connect() as conn:
            after = max((a["id"] for a in alerts_db.list_alerts(conn, limit=1000)), default=0)
        return cls(engine, rules, int(after))

    def poll(self) -> None:
        db = alerts_db
        with self.engine.connect() as conn:
            recent = [a for a in db.list_alerts(conn, limit=1000) if a["id"] > self.after_id]
            for alert in sorted(recent, key=lambda a: a["id"]):
                alert_id = alert["id"]
                previous = self.states.get(alert_id)
                if previous is None:
                    self.fired += 1
                    self.events += fire_lines(alert)
                if alert["state"] == "resolved" and previous != "resolved":
                    self.resolved += 1
                    self.events += resolve_lines(alert)
                self.states[alert_id] = alert["state"]
                self.alerts[alert_id] = alert
                self.deliveries[alert_id] = db.list_outbox(conn, alert_id=alert_id)

    def open_ids(self) -> list[int]:
        return [i for i, s in self.states.items() if s != "resolved"]

    def delivery_line(self, alert_id: int) -> str:
        alert = self.alerts[alert_id]
        rows = self.deliveries.get(alert_id) or []
        if not rows:
            if alert["state"] == "silenced":
                return "silenced: recorded, not sent"
            return f"not sent: no notifier routed for {alert['severity']}"
        return ", ".join(f"{r['notifier']} {r['event']} {r['status']}" for r in rows)

    def panel(self, subtitle: str, hint: str) -> Panel:
        body: list[Any] = [Text.from_markup(line) for line in self.events[-16:]]
        if self.alerts:
            body.append(Text(""))
            for alert_id, alert in self.alerts.items():
                body.append(Text.from_markup(
                    f"#{alert_id} {_scope(alert)} [{alert['state']}] notifications: "
                    f"{escape(self.delivery_line(alert_id))}"))
        if not body:
            body = [Text(hint, style="dim")]
        return Panel(Group(*body), title=f"Alerts: {self.fired} fired, {self.resolved} resolved",
                     title_align="left", subtitle=subtitle, subtitle_align="left")

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for alert_id, alert in self.alerts.items():
            ev = alert.get("evidence") or {}
            out.append({
                "id": alert_id, "rule": alert["rule"], "scope_type": alert["scope_type"], "scope": alert["scope"],
                "severity": alert["severity"], "state": alert["state"],
                "started_at": alert["started_at"].isoformat() if alert.get("started_at") else None,
                "fired_at": ev.get("fired_at"),
                "resolved_at": alert["resolved_at"].isoformat() if alert.get("resolved_at") else None,
                "current_share": ev.get("current_share"), "baseline_share": ev.get("baseline_share"),
                "volume": ev.get("volume"), "baseline_volume": ev.get("baseline_volume"), "p_value": ev.get("p_value"),
                "notifications": [{"notifier": r["notifier"], "event": r["event"], "status": r["status"]}
                                  for r in self.deliveries.get(alert_id) or []],
            })
        return out


def _start_alerts(engine: Any, settings: Settings, alert_settings: AlertSettings, console: Console) -> Any:
    """The alert service in two background threads (None, with the reason printed, if it cannot start)."""
    try:
        # the same settings -> AlertConfig mapping as `marketmood alerts run` (watermark-gated windows included)
        config = alert_config(settings.model_copy(update={"alerts": alert_settings}))
        service = AlertService(engine, load_rules(config.rules_path), config)
    except (RulesError, ValueError, ConfigError) as exc:
        console.print(f"[red]alerts disabled: {escape(str(exc))}[/]")
        return None
    service.start()
    return service


# --- live view ------------------------------------------------------------------------------------------


def summary_table(rows: list[Any], published: int, total: int, stored: int, elapsed: float,
                  phase: str | None = None) -> Table:
    title = f"MarketMood live: {published}/{total} published, {stored} scored, {elapsed:.0f}s"
    if phase:
        title += f", feed: {phase}"
    table = Table(title=title, title_justify="left")
    for column, justify in (("topic", "left"), ("articles", "right"), ("negative", "right"),
                            ("neutral", "right"), ("positive", "right"), ("mean score", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in sorted(rows, key=lambda r: -r.n):
        style = "red" if r.n >= 5 and r.negative / r.n >= 0.5 else None
        table.add_row(r.topic, str(r.n), str(r.negative), str(r.neutral), str(r.positive),
                      f"{r.mean_score:+.2f}", style=style)
    return table


@dataclass
class Feed:
    """What the demo publishes: generated news at a rate, or real history replayed at its own (retimed) pace."""

    records: Iterable[dict[str, Any]]
    total: int
    rate: float  # msg/s; 0 with ``live`` (each record goes out at its retimed published_at)
    hint: str
    phase: Callable[[int], str]
    live: LiveClock | None = None


def generated_feed(rate: float, phases: tuple[float, float, float], seed: int, articles: int | None) -> Feed:
    stream = DemoStream.scenario(rate, *phases, seed=seed, run_id=run_id(datetime.now(timezone.utc)))
    calm_s, burst_s, _ = phases
    hint = (f"no alert yet: calm news for {calm_s:.0f} s (the baseline), then a {burst_s:.0f}-s burst of bad "
            f"news about {stream.burst_company[0]} ({stream.burst_company[1]}, {stream.burst_topic})")
    return Feed(stream.articles(), min(stream.n_articles, articles or stream.n_articles), rate, hint, stream.phase)


def reuters_feed(data_path: Path, *, replay_from: datetime, speed: float, articles: int | None,
                 run: str | None = None) -> Feed:
    """Real Reuters headlines from ``replay_from`` on, mapped onto now and replayed ``speed`` times faster.
    The stream gives dates only, so articles are spread over each day (flagged ``time_precision: day``).

    Each replay's ids carry ``run`` (``streams.sources.in_run``; default: the run id of now, as
    ``marketmood publish --retime`` names its runs), as the generated feed's do: with the file's own ids a second
    replay on the same database was stored as the first one's articles (an article keeps its first time), so
    nothing showed as scored since the start, and the demo waited for them forever.
    """
    path = next(iter(sorted((data_path / "reuters_news_stream").glob("*.train.csv*"))), None)
    if path is None:
        raise ConfigError(f"no Reuters stream under {data_path / 'reuters_news_stream'} (set MARKETMOOD_DATA_PATH)")
    total = articles or 600
    start = datetime.now(timezone.utc)
    retimed = retime(records_since(read_records(path, fmt="reuters"), replay_from), start=start, speed=speed)
    records = in_run(retimed, run or run_id(start))
    hint = (f"real Reuters headlines from {replay_from:%Y-%m-%d}, {speed:g}x real time: alerts fire only if that "
            "history had a negative spike")
    return Feed(records, total, 0.0, hint, lambda _: "replay", live=LiveClock())


def run_demo(settings: Settings, *, rate: float = 10.0, phases: tuple[float, float, float] = DEFAULT_PHASES,
             articles: int | None = None, duration: float | None = None, console: Console | None = None,
             seed: int = 7, data: str = "generated", replay_from: datetime | None = None,
             speed: float = 60.0) -> dict[str, Any]:
    """Run the whole demo; returns a summary (published, stored, alerts). Blocks until done or interrupted.

    ``data`` = ``generated``: ``phases`` = (calm, burst, recovery) seconds of generated news at ``rate``
    articles/s. ``data`` = ``reuters``: the Reuters stream of the data path from ``replay_from`` (default
    2016-03-01), retimed onto now at ``speed`` x. ``articles`` caps the feed either way.
    """
    console = console or Console()
    # What the live table and the summary count: articles timed from now on (both feeds time theirs from their
    # creation). Taken before the feed is made: a replay is timed from that moment and the services may take a
    # minute to start. It was a minute before the start: a demo run right after another counted that run's last
    # minute of articles as its own ("1200 published, 1650 scored").
    since = datetime.now(timezone.utc)
    usable_home(settings.home)  # before anything starts: the demo's logs and state live there too
    if data == "reuters":
        feed = reuters_feed(settings.data_path, replay_from=replay_from or datetime(2016, 3, 1, tzinfo=timezone.utc),
                            speed=speed, articles=articles)
    else:
        feed = generated_feed(rate, phases, seed, articles)
    total = feed.total
    alert_settings = demo_alert_settings(settings)
    published = 0
    stop_publishing = threading.Event()
    result: dict[str, Any] = {"published": 0, "stored": 0, "alerts": []}
    with sigterm_as_interrupt(), services(settings) as svc:
        worker = start_worker_process(settings, svc, settings.home / "demo-worker.log")
        alerts = None
        try:  # until the run loop's own finally takes over: a failure here must not leave the worker running
            engine = make_engine(svc.database_url)
            alerts = _start_alerts(engine, settings, alert_settings, console)
            watch = AlertWatch.start(engine, alerts.rules) if alerts is not None else None
            if alerts is not None:
                routing = describe_routing(alerts.rules)
                console.print(f"alert rules: {alert_settings.rules_path} ({len(alerts.rules.rules)} rules), "
                              f"{alert_settings.window_s}-s windows; evidence plots: {alert_settings.plots_dir}")
                console.print("notifications: " + ("; ".join(routing) if routing else
                              "none configured (alerts are recorded in PostgreSQL only: `marketmood alerts list`; "
                              "add notifiers and routing as in alerts/rules.example.yaml)"))
                subtitle = (f"rules {Path(str(alert_settings.rules_path)).name}, {alert_settings.window_s}-s windows, "
                            "notifications: " + ("; ".join(routing) if routing else "none (recorded only)"))
            else:
                subtitle = "alerts disabled"
            hint = feed.hint
            producer = make_producer(svc.kafka_bootstrap)
            started = time.monotonic()

            def publish_feed() -> None:
                nonlocal published

                def on_sent(n: int) -> None:
                    nonlocal published
                    published = n

                try:
                    publish(feed.records, producer=producer, topic=settings.topics.raw, rate=feed.rate, limit=total,
                            on_sent=on_sent, stop=stop_publishing.is_set, live=feed.live)
                except PublishError as exc:  # the summary then shows what the broker really took
                    published = exc.published
                    log.warning("demo_publish_incomplete", error=str(exc))

            publisher = threading.Thread(target=publish_feed, name="demo-publisher", daemon=True)
            publisher.start()
        except BaseException:
            try:
                if alerts is not None:
                    alerts.stop()
            finally:
                stop_process(worker)
            raise
        stored = 0
        settle_from: float | None = None
        try:
            with Live(console=console, refresh_per_second=2) as live:
                while True:
                    with engine.connect() as conn:
                        rows = topic_summary(conn, since)
                    stored = sum(r.n for r in rows)
                    elapsed = time.monotonic() - started
                    feed_done = not publisher.is_alive()
                    phase = "done" if feed_done else feed.phase(max(published - 1, 0)) if published else "starting"
                    table = summary_table(rows, published, total, stored, elapsed, phase)
                    if watch is not None:
                        try:
                            watch.poll()
                        except Exception as exc:  # noqa: BLE001 - the view must survive a DB hiccup
                            log.warning("demo_alert_poll_failed", error=str(exc))
                        live.update(Group(table, watch.panel(subtitle, hint)))
                    else:
                        live.update(table)
                    if worker.poll() is not None:
                        console.print(f"[red]worker exited ({worker.returncode}); see {settings.home}/demo-worker.log")
                        break
                    if duration is not None and elapsed >= duration:
                        break
                    if feed_done and stored >= published:
                        if watch is None or not watch.open_ids():
                            break
                        settle_from = settle_from or time.monotonic()
                        if time.monotonic() - settle_from > SETTLE_S:
                            console.print("[yellow]an alert is still open at the end of the demo")
                            break
                    time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("interrupted: shutting down")
        finally:
            try:  # a second Ctrl-C here skips the rest, but never the worker's stop
                stop_publishing.set()
                publisher.join(10)
                producer.close(5)
                if alerts is not None:
                    alerts.stop()
            finally:
                code = stop_process(worker)
            try:  # what the worker stored while draining after the last poll: the summary says what the database has
                with engine.connect() as conn:
                    stored = sum(r.n for r in topic_summary(conn, since))
            except Exception as exc:  # noqa: BLE001 - the summary still gets written, with the last count seen
                log.warning("demo_final_count_failed", error=str(exc))
            if watch is not None:
                try:
                    watch.poll()
                except Exception:  # noqa: BLE001
                    pass
            engine.dispose()
            result = {"published": published, "stored": stored, "worker_exit_code": code,
                      "alerts": watch.summary() if watch is not None else [],
                      "rules_path": str(alert_settings.rules_path),
                      "plots_dir": str(alert_settings.plots_dir)}
            console.print()
            console.print(f"demo finished: {published} published, {stored} scored; worker exit code {code}")
            if watch is not None:
                console.print(f"alerts: {watch.fired} fired, {watch.resolved} resolved")
                for a in result["alerts"]:
                    console.print(f"  #{a['id']} {a['scope_type']} {escape(str(a['scope']))} ({a['rule']}): "
                                  f"{a['state']}, fired {a['fired_at']}, resolved {a['resolved_at']}")
            summary_path = settings.home / "demo-summary.json"
            summary_path.write_text(json.dumps(result, indent=2, default=str))
            console.print(f"summary: {summary_path}")
    return result
