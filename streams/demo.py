"""``marketmood demo``: embedded broker + database, the worker, a generated news feed and a live summary.

Everything runs from a fresh clone: the feed is ``streams.demo_news`` (text the project wrote), the
broker and database are embedded (``marketmood.runtime.services``), the worker is a child process
(``marketmood worker``, so faust owns its own event loop and signals), and the alert service runs in
this process when the alerts package provides it. Ctrl-C or the end of the run stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from marketmood.logs import get_logger
from marketmood.runtime import Services, services, sigterm_as_interrupt
from marketmood.settings import REPO_ROOT, Settings
from streams.demo_news import DemoStream
from streams.publisher import make_producer, publish

log = get_logger(__name__)


def start_worker_process(settings: Settings, svc: Services, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **svc.env(), "MARKETMOOD_HOME": str(settings.home), "PYTHONUNBUFFERED": "1"}
    logf = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "marketmood.cli", "worker"], cwd=REPO_ROOT, env=env,
                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int | None:
    """SIGTERM (the worker drains its batch), SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return None


def _start_alerts(database_url: str) -> Any:
    """The alert service in a background thread, if the alerts area provides one (else None)."""
    try:
        from alerts.service import AlertService
        from storage.db import make_engine
    except ImportError:
        return None
    try:
        service = AlertService(make_engine(database_url))
        service.start()
        return service
    except Exception as exc:  # noqa: BLE001 - the demo still shows the pipeline without alerts
        log.warning("alert service not started", error=str(exc))
        return None


def summary_table(rows: list[Any], published: int, total: int, stored: int, elapsed: float) -> Table:
    table = Table(title=f"MarketMood live: {published}/{total} published, {stored} scored, {elapsed:.0f}s",
                  title_justify="left")
    for column, justify in (("topic", "left"), ("articles", "right"), ("negative", "right"),
                            ("neutral", "right"), ("positive", "right"), ("mean score", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in sorted(rows, key=lambda r: -r.n):
        style = "red" if r.n >= 5 and r.negative / r.n >= 0.5 else None
        table.add_row(r.topic, str(r.n), str(r.negative), str(r.neutral), str(r.positive),
                      f"{r.mean_score:+.2f}", style=style)
    return table


def run_demo(settings: Settings, *, articles: int, rate: float, duration: float | None,
             console: Console | None = None, seed: int = 7) -> dict[str, int]:
    """Run the whole demo; returns counts (published, stored). Blocks until done or interrupted."""
    from storage.articles import topic_summary
    from storage.db import make_engine

    console = console or Console()
    settings.home.mkdir(parents=True, exist_ok=True)
    stream = DemoStream(n_articles=articles, seed=seed, run_id=datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S"))
    published = 0
    stop_publishing = threading.Event()
    counts = {"published": 0, "stored": 0}
    with sigterm_as_interrupt(), services(settings) as svc:
        worker = start_worker_process(settings, svc, settings.home / "demo-worker.log")
        alerts = _start_alerts(svc.database_url)
        engine = make_engine(svc.database_url)
        producer = make_producer(svc.kafka_bootstrap)
        started = time.monotonic()
        since = datetime.now(timezone.utc) - timedelta(minutes=1)

        def feed() -> None:
            nonlocal published

            def on_sent(n: int) -> None:
                nonlocal published
                published = n

            publish(stream.articles(), producer=producer, topic=settings.topics.raw, rate=rate,
                    on_sent=on_sent, stop=stop_publishing.is_set)

        publisher = threading.Thread(target=feed, name="demo-publisher", daemon=True)
        publisher.start()
        stored = 0
        try:
            with Live(console=console, refresh_per_second=2) as live:
                while True:
                    with engine.connect() as conn:
                        rows = topic_summary(conn, since)
                    stored = sum(r.n for r in rows)
                    elapsed = time.monotonic() - started
                    live.update(summary_table(rows, published, articles, stored, elapsed))
                    if worker.poll() is not None:
                        console.print(f"[red]worker exited ({worker.returncode}); see {settings.home}/demo-worker.log")
                        break
                    if stored >= articles and not publisher.is_alive():
                        break
                    if duration is not None and elapsed >= duration:
                        break
                    time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("interrupted: shutting down")
        finally:
            stop_publishing.set()
            publisher.join(10)
            producer.close(5)
            if alerts is not None:
                alerts.stop()
            code = stop_process(worker)
            engine.dispose()
            counts = {"published": published, "stored": stored}
            console.print()
            console.print(f"demo finished: {published} published, {stored} scored; worker exit code {code}")
    return counts
