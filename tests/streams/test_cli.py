"""``marketmood publish`` into a real broker, and ``marketmood demo`` from nothing (embedded everything)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.settings import REPO_ROOT, TopicSettings
from models.artifact import BUNDLED_MODEL_DIR
from tests.streams.harness import consume_all
from tests.streams.records import STOCKNET


def test_publish_replays_a_stream_file_into_the_topic(
    kafka_bootstrap: str, topic_names: TopicSettings, tmp_path: Path
) -> None:
    path = tmp_path / "tweets.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(STOCKNET)
    result = CliRunner().invoke(
        cli, ["publish", str(path), "--rate", "0", "--bootstrap", kafka_bootstrap, "--topic", topic_names.raw]
    )
    assert result.exit_code == 0, result.output
    assert "published 2 messages" in result.output
    records = consume_all(kafka_bootstrap, topic_names.raw, 2, timeout_s=20)
    assert sorted(r.key for r in records) == [b"tweet-1", b"tweet-2"]
    assert {json.loads(r.value)["tickers"][0] for r in records} == {"AAPL", "GOOG"}


def test_publish_without_a_broker_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text('{"id": "a", "title": "t"}\n')
    monkeypatch.setenv("MARKETMOOD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MARKETMOOD_KAFKA_BOOTSTRAP", raising=False)
    from marketmood.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["publish", str(path)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code != 0 and "MARKETMOOD_KAFKA_BOOTSTRAP" in result.output


@pytest.mark.timeout(240)
def test_demo_runs_from_nothing_fires_and_resolves_an_alert_and_stops_cleanly(tmp_path: Path, model_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env.update({"MARKETMOOD_HOME": str(tmp_path / "home"), "MARKETMOOD_WORKER__WEB_PORT": "0",
                "MARKETMOOD_MODEL__THREADS": "1", "COLUMNS": "160"})
    if model_path != BUNDLED_MODEL_DIR:  # with the bundled model, the demo runs exactly as from a fresh clone
        env["MARKETMOOD_MODEL__PATH"] = str(model_path)
    # A shorter scenario than the default (40,30,50 s at 10/s): 20 s calm, 20 s burst, 30 s calm.
    proc = subprocess.run([sys.executable, "-m", "marketmood.cli", "demo", "--rate", "15", "--phases", "20,20,30",
                           "--duration", "200"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo finished: 1050 published, 1050 scored; worker exit code 0" in proc.stdout, proc.stdout[-3000:]
    assert "mean score" in proc.stdout
    assert "notifications: none configured" in proc.stdout  # the demo rules route nowhere, and say so

    summary = json.loads((tmp_path / "home" / "demo-summary.json").read_text())
    assert summary["rules_path"].endswith("alerts/rules.demo.yaml")
    # The burst is about Exxon Mobil (ticker XOM): its ticker alert fired during the burst and resolved after it.
    xom = [a for a in summary["alerts"] if (a["scope_type"], a["scope"]) == ("ticker", "XOM")]
    assert len(xom) == 1, summary["alerts"]
    alert = xom[0]
    assert alert["state"] == "resolved", alert
    assert datetime.fromisoformat(alert["fired_at"]) < datetime.fromisoformat(alert["resolved_at"]), alert
    assert alert["current_share"] >= 0.5 and alert["current_share"] - alert["baseline_share"] >= 0.3, alert
    assert alert["notifications"] == []  # recorded, routed nowhere
    assert "FIRING" in proc.stdout and "RESOLVED" in proc.stdout  # the live panel showed both changes
    assert f"#{alert['id']} ticker XOM (demo-ticker-spike): resolved" in proc.stdout
    plots = list((tmp_path / "home" / "alert-plots").glob(f"alert-{alert['id']}-ticker-xom.png"))
    assert len(plots) == 1 and plots[0].stat().st_size > 1000
    # embedded services are gone: no broker state left, no postmaster running
    assert not (tmp_path / "home" / "kafka" / "tansu.json").exists()
    assert not (tmp_path / "home" / "postgres" / "postmaster.pid").exists()


def test_publish_of_an_unknown_file_type_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "news.txt"
    path.write_text("hello\n")
    result = CliRunner().invoke(cli, ["publish", str(path), "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a traceback
    assert "expected .jsonl/.ndjson or .csv" in result.output


def test_publish_of_a_malformed_file_is_a_clear_error(
    kafka_bootstrap: str, topic_names: TopicSettings, tmp_path: Path
) -> None:
    path = tmp_path / "reuters.csv"
    path.write_text("article_id,published_date,ticker,headline\n1,2017-01-02,AAPL,Apple up\n2,not-a-date,MSFT,Oops\n")
    result = CliRunner().invoke(
        cli, ["publish", str(path), "--rate", "0", "--bootstrap", kafka_bootstrap, "--topic", topic_names.raw]
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "cannot read" in result.output and "not-a-date" in result.output


def test_publish_to_an_unreachable_broker_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka.errors import KafkaTimeoutError

    import streams.publisher

    def unreachable(bootstrap: str, **overrides: object) -> None:
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")  # after a 30-s bootstrap wait

    monkeypatch.setattr(streams.publisher, "make_producer", unreachable)
    path = tmp_path / "n.jsonl"
    path.write_text('{"id": "a", "title": "t"}\n')
    result = CliRunner().invoke(cli, ["publish", str(path), "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "cannot reach Kafka at 127.0.0.1:1" in result.output
