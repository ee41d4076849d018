"""``marketmood demo`` (``marketmood.demo.run``): stopping the worker, routing lines without secrets, repeat Reuters
replays, a home that cannot be used, and a summary that counts what the database holds."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import func, select

from alerts.rules import parse_rules
from marketmood.demo.run import describe_routing, reuters_feed, run_demo, stop_process
from marketmood.settings import ConfigError, TopicSettings, load_settings
from storage.db import make_engine
from storage.schema import Article

REUTERS_FROM = datetime(2016, 3, 1, tzinfo=timezone.utc)


def _reuters_data() -> Path:
    data_path = load_settings().data_path
    if not (data_path / "reuters_news_stream").is_dir():
        pytest.skip("the Reuters stream is not under MARKETMOOD_DATA_PATH")
    return data_path


def test_a_second_ctrl_c_while_the_worker_drains_still_stops_it() -> None:
    """The worker runs in its own session (the terminal's Ctrl-C never reaches it): a KeyboardInterrupt during
    the drain wait left it running after the demo, holding its metrics port and retrying dead services."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"  # SIGTERM ignored: a long drain
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # the second Ctrl-C
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            stop_process(child, timeout_s=60)
        timer.join()
        assert child.poll() is not None, "the worker outlived the interrupted demo"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)


def test_routing_lines_never_show_a_password_in_a_notifier_url() -> None:
    rules = parse_rules({
        "notifiers": {
            "hook": {"type": "webhook", "url": "https://bot:hunter2@hooks.example.com:8443/t/abc",
                     "secret": "s" * 16},
            "chat": {"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/sekrit"},
        },
        "routing": {"critical": ["hook", "chat"]},
        "rules": [{"name": "r", "scope": {"type": "topic", "include": "all"}, "severity": "critical"}],
    }, "test")
    [line] = describe_routing(rules)
    assert line == ("critical -> hook (webhook https://hooks.example.com:8443/...); "
                    "chat (slack https://hooks.slack.com/...)"), line
    assert "hunter2" not in line and "bot" not in line and "sekrit" not in line


def test_each_reuters_replay_publishes_its_own_ids() -> None:
    """The file's ids made a second replay the first one's articles (stored with the first run's times)."""
    data_path = _reuters_data()
    runs = []
    for _ in range(2):  # two demo runs: a second apart at least (the default run id is the start, to the second)
        runs.append(reuters_feed(data_path, replay_from=REUTERS_FROM, speed=3600, articles=5))
        time.sleep(1.05)
    first, second = ([r["id"] for r in islice(feed.records, 5)] for feed in runs)
    assert len(first) == 5 and not set(first) & set(second)
    assert [i.rsplit("@", 1)[0] for i in first] == [i.rsplit("@", 1)[0] for i in second]  # the same articles


def test_a_home_that_cannot_be_made_is_a_config_error_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("in the way")
    settings = load_settings().model_copy(update={"home": tmp_path / "a-file" / "home"})
    with pytest.raises(ConfigError, match=r"MARKETMOOD_HOME=.*a-file/home cannot hold"):
        run_demo(settings, console=Console(file=io.StringIO()))


@pytest.mark.timeout(480)
def test_a_repeat_reuters_replay_completes_and_the_summary_counts_what_the_database_holds(
        kafka_bootstrap: str, make_topics: Callable[[int], TopicSettings], db_url: str, model_path: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run 1 is cut short by --duration mid-feed: its summary said what the last poll saw, not what the worker
    stored while draining. Run 2 replays the same first articles: with the file's ids they were the first run's
    (earlier times), so none counted as scored and the demo waited until --duration."""
    data_path = _reuters_data()
    monkeypatch.setenv("MARKETMOOD_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    for key, value in {"HOME": str(tmp_path / "home"), "DATA_PATH": str(data_path), "WORKER__WEB_PORT": "0",
                       "MODEL__PATH": str(model_path), "MODEL__THREADS": "1", "TOPICS__PARTITIONS": "1"}.items():
        monkeypatch.setenv(f"MARKETMOOD_{key}", value)  # the worker subprocess reads its settings from the environment
    console = Console(file=io.StringIO(), width=160)
    engine = make_engine(db_url)

    def demo(**kwargs: object) -> dict[str, object]:
        topics = make_topics(1)  # fresh topics: the demo's embedded broker starts empty every run
        for key, value in {"RAW": topics.raw, "SCORED": topics.scored, "DEADLETTER": topics.deadletter}.items():
            monkeypatch.setenv(f"MARKETMOOD_TOPICS__{key}", value)
        monkeypatch.setenv("MARKETMOOD_WORKER__APP_ID", f"demo-{topics.raw}")
        return run_demo(load_settings(), data="reuters", replay_from=REUTERS_FROM, speed=3600, console=console,
                        **kwargs)  # type: ignore[arg-type]

    def in_database() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Article)).scalar_one())

    try:
        first = demo(articles=200, duration=30)  # ~2 days of headlines: about a minute at 3600x
        stored_first = in_database()
        second = demo(articles=15, duration=90)
        stored_both = in_database()
    finally:
        engine.dispose()
    log = console.file.getvalue()[-3000:]  # type: ignore[attr-defined]
    assert 15 <= stored_first and first["published"] < 200, (first, stored_first, log)  # cut short after scoring some
    outcome = {"worker exit codes": (first["worker_exit_code"], second["worker_exit_code"]),
               "first: summary vs database": (first["stored"], stored_first),
               "second: published, stored, new in database": (second["published"], second["stored"],
                                                              stored_both - stored_first)}
    assert outcome == {"worker exit codes": (0, 0), "first: summary vs database": (stored_first, stored_first),
                       "second: published, stored, new in database": (15, 15, 15)}, (outcome, log)
