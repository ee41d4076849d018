"""``marketmood publish`` into a real broker, and ``marketmood demo`` from nothing (embedded everything)."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer

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


def _ids_in(bootstrap: str, topic: str, expected: int) -> list[str]:
    """Every record's key on ``topic``: waits for one more than ``expected``, so a surplus shows."""
    return sorted(r.key.decode() for r in consume_all(bootstrap, topic, expected + 1, timeout_s=5))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_publish_ctrl_c_delivers_what_was_sent_and_says_how_to_resume(
    kafka_bootstrap: str, topic_names: TopicSettings, tmp_path: Path, stop: signal.Signals
) -> None:
    """Ctrl-C mid-replay printed only "Aborted!" (exit 1): nothing said how many messages the broker had or
    where to pick up. Now it flushes, reports the acknowledged count (which is what the topic holds), exits
    130, and names the --start-at that resumes the replay (the overlap is one record, stored once by id).
    SIGTERM (a supervisor, `timeout`, `docker stop`) does the same: it killed the replay with nothing said."""
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    path = tmp_path / "news.jsonl"
    path.write_text("".join(json.dumps({"id": f"a{i}", "title": "t", "published_at": (base + timedelta(
        seconds=i)).isoformat()}) + "\n" for i in range(300)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env["MARKETMOOD_HOME"] = str(tmp_path / "home")
    args = [sys.executable, "-m", "marketmood.cli", "publish", str(path), "--bootstrap", kafka_bootstrap,
            "--topic", topic_names.raw]
    proc = subprocess.Popen([*args, "--rate", "20"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        consume_all(kafka_bootstrap, topic_names.raw, 5, timeout_s=120)  # it is under way
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    found = re.search(r"interrupted: (\d+) of (\d+) messages sent to \S+ were acknowledged; "
                      r"to resume, rerun with --start-at (\S+)", err)
    assert found, err[-2000:]
    acknowledged, sent, resume = int(found[1]), int(found[2]), found[3]
    assert 5 <= acknowledged == sent < 300
    assert _ids_in(kafka_bootstrap, topic_names.raw, acknowledged) == sorted(f"a{i}" for i in range(acknowledged))
    assert datetime.fromisoformat(resume) == base + timedelta(seconds=acknowledged - 1)  # the last one sent
    rerun = subprocess.run([*args, "--rate", "0", "--start-at", resume], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"published {300 - acknowledged + 1} messages" in rerun.stdout
    assert _ids_in(kafka_bootstrap, topic_names.raw, 301) == sorted(  # every record, the last one sent twice
        [f"a{i}" for i in range(300)] + [f"a{acknowledged - 1}"])


@pytest.mark.timeout(400)
def test_publish_when_the_broker_goes_away_mid_replay_is_a_clear_error_with_honest_counts(tmp_path: Path) -> None:
    """The broker stops after a few messages. Before: the replay went on to the end of the file (here 200 s;
    the Reuters stream at 50/s: 75 min) before saying anything, and when the broker died within the last
    minutes flush() timed out, the error counted every message as sent and producer.close() raised again in
    the ``finally``: a traceback. Now it stops within the 30-s delivery timeout, exits 1 with one line, and
    the counts are acknowledgements."""
    from streams.broker import EmbeddedBroker
    from streams.topics import ensure_topics

    broker = EmbeddedBroker(tmp_path / "kafka")
    bootstrap = broker.start()
    topics = TopicSettings(raw="gone.raw", scored="gone.scored", deadletter="gone.dl", partitions=1)
    ensure_topics(bootstrap, topics)
    path = tmp_path / "news.jsonl"
    path.write_text("".join(json.dumps({"id": f"a{i}", "title": "t"}) + "\n" for i in range(4000)))  # 200 s at 20/s
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env["MARKETMOOD_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen([sys.executable, "-m", "marketmood.cli", "publish", str(path), "--rate", "20",
                             "--bootstrap", bootstrap, "--topic", topics.raw], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        consume_all(bootstrap, topics.raw, 5, timeout_s=120)
        broker.stop()
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        broker.stop()
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    found = re.search(r"Error: publishing to gone\.raw: (\d+) of (\d+) messages were not accepted by the broker "
                      r"\(first error: .*\); (\d+) were published", err)
    assert found, err[-3000:]
    failed, sent, published = int(found[1]), int(found[2]), int(found[3])
    assert published >= 5 and failed > 0 and published + failed == sent < 4000


def test_publish_before_any_worker_creates_news_raw_with_the_configured_partitions(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`marketmood publish` into news.raw before any worker ran: the broker auto-created the topic with its own
    default partition count (1 on Apache Kafka), and the worker's ensure_topics keeps an existing topic as it
    is, so worker parallelism was capped for good. Now publish creates the topics as the worker would."""
    from marketmood.settings import get_settings

    raw = f"fresh.raw.{os.getpid()}"
    monkeypatch.setenv("MARKETMOOD_TOPICS__RAW", raw)
    monkeypatch.setenv("MARKETMOOD_TOPICS__SCORED", f"fresh.scored.{os.getpid()}")
    monkeypatch.setenv("MARKETMOOD_TOPICS__DEADLETTER", f"fresh.dl.{os.getpid()}")
    monkeypatch.setenv("MARKETMOOD_TOPICS__PARTITIONS", "3")  # tansu's own default is 4
    path = tmp_path / "n.jsonl"
    path.write_text('{"id": "a", "title": "t"}\n')
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["publish", str(path), "--bootstrap", kafka_bootstrap])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(raw) == {0, 1, 2}
    finally:
        consumer.close()
