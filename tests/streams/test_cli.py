"""``marketmood publish`` into a real broker, and ``marketmood demo`` from nothing (embedded everything)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.settings import REPO_ROOT, TopicSettings
from models.artifact import BUNDLED_MODEL_DIR
from tests.streams.harness import consume_all
from tests.streams.test_sources import STOCKNET


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
def test_demo_runs_from_nothing_and_stops_cleanly(tmp_path: Path, model_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env.update({"MARKETMOOD_HOME": str(tmp_path / "home"), "MARKETMOOD_WORKER__WEB_PORT": "0",
                "MARKETMOOD_MODEL__THREADS": "1", "COLUMNS": "120"})
    if model_path != BUNDLED_MODEL_DIR:  # with the bundled model, the demo runs exactly as from a fresh clone
        env["MARKETMOOD_MODEL__PATH"] = str(model_path)
    proc = subprocess.run([sys.executable, "-m", "marketmood.cli", "demo", "--articles", "40", "--rate", "0",
                           "--duration", "150"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "demo finished: 40 published, 40 scored; worker exit code 0" in proc.stdout
    assert "mean score" in proc.stdout
    # embedded services are gone: no broker state left, no postmaster running
    assert not (tmp_path / "home" / "kafka" / "tansu.json").exists()
    assert not (tmp_path / "home" / "postgres" / "postmaster.pid").exists()
