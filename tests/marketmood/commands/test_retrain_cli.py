"""``marketmood feedback import|requests``, ``models register|shadow|rollback`` and ``scheduler --once`` against a real
database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from marketmood.cli import cli
from marketmood.settings import get_settings
from models.artifact import ArtifactInfo, write_info
from storage import labelling
from storage import registry as registry_sql
from storage.db import make_engine
from storage.feedback import fetch_feedback
from storage.schema import ModelVersion
from training import registry
from training.retrain import SPLIT_RECORD


@pytest.fixture
def run(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    monkeypatch.setenv("MARKETMOOD_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli, list(args))
    get_settings.cache_clear()


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _artifact(tmp_path: Path, version: str) -> Path:
    folder = tmp_path / version
    write_info(folder, ArtifactInfo(version=version, base_encoder="enc", max_length=64))
    return folder


def test_feedback_import_records_one_author_and_refuses_an_author_column(run, engine, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("text,sentiment,topic\nShares tumble,Bearish,\nDividend raised,,dividend\n")
    result = run("feedback", "import", str(good), "--by", "ana")
    assert result.exit_code == 0, result.output
    assert "imported 2 feedback row(s)" in result.output and "as ana" in result.output
    posing = tmp_path / "posing.csv"
    posing.write_text("text,sentiment,author\nShares tumble,negative,bo\n")
    refused = run("feedback", "import", str(posing), "--by", "ana")
    assert refused.exit_code == 1 and "'author' column" in refused.output and "nothing imported" in refused.output
    with engine.connect() as conn:
        rows = fetch_feedback(conn)
    assert [(r.text, r.sentiment, r.topic, r.author, r.origin) for r in rows] == [
        ("Shares tumble", "negative", None, "ana", "csv"), ("Dividend raised", None, "Dividend", "ana", "csv")]


def test_feedback_import_refuses_article_ids_that_name_no_stored_article(run, engine, tmp_path):
    """Ids from another environment were imported and never trained on (their text is the article's)."""
    from sqlalchemy import insert, text

    from storage.schema import Article

    with engine.begin() as conn:
        conn.execute(insert(Article).values(id="a1", title="Oil slumps", event_time=text("now()")))
    labels = tmp_path / "labels.csv"
    labels.write_text("article_id,text,sentiment\na1,,negative\nprod-7,,positive\nprod-9,Fed holds,neutral\n")
    refused = run("feedback", "import", str(labels), "--by", "ana")
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit), refused.output
    assert "1 article_id(s) without a text name no stored article" in refused.output
    assert "prod-7" in refused.output and "prod-9" not in refused.output and "nothing imported" in refused.output
    with engine.connect() as conn:
        assert fetch_feedback(conn) == []
    labels.write_text("article_id,text,sentiment\na1,,negative\nprod-9,Fed holds,neutral\n")
    assert run("feedback", "import", str(labels), "--by", "ana").exit_code == 0
    with engine.connect() as conn:
        assert [(r.text, r.sentiment) for r in fetch_feedback(conn)] == [("Oil slumps", "negative"),
                                                                       ("Fed holds", "neutral")]


def test_feedback_requests_lists_and_closes(run, engine):
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with engine.begin() as conn:
        rid = labelling.create_request(conn, model_version="v1", window_start=now - timedelta(hours=24),
                                       window_end=now, reasons=["sentiment mix shifted"],
                                       drifted_slice={"column": "sentiment", "labels": ["negative"]},
                                       items=[{"article_id": "a1", "title": "Oil crashes", "sentiment": "negative",
                                               "topic": "Energy | Oil", "uncertainty": 0.61}])
    listing = run("feedback", "requests")
    assert listing.exit_code == 0 and f"#{rid} open" in listing.output and "1 texts" in listing.output
    items = run("feedback", "requests", "--id", str(rid))
    assert "Oil crashes" in items.output and "0.610" in items.output
    assert run("feedback", "requests", "--close", str(rid)).exit_code == 0
    assert "no labelling requests open" in run("feedback", "requests").output
    assert run("feedback", "requests", "--close", str(rid)).exit_code == 1


def test_models_register_force_shadow_and_rollback(run, engine, tmp_path):
    registry.register_artifact(engine, _artifact(tmp_path, "v1"))
    registry.promote(engine, "v1", by="test")
    registered = run("models", "register", str(_artifact(tmp_path, "v2")))
    assert registered.exit_code == 0 and "registered v2 (candidate)" in registered.output
    assert run("models", "register", str(_artifact(tmp_path, "v2"))).exit_code == 1  # versions are immutable
    forced = run("models", "register", str(_artifact(tmp_path, "v3")), "--force")
    assert forced.exit_code == 0 and "active: v1 -> v3 (forced, no gate)" in forced.output
    assert run("models", "shadow").exit_code == 1  # no shadow version yet
    registry.start_shadow(engine, "v2", by="test", reason="passed the gate")
    shadow = run("models", "shadow")
    assert shadow.exit_code == 0, shadow.output
    assert "shadow v2 vs active v3" in shadow.output and "verdict:             waiting" in shadow.output
    rolled = run("models", "rollback", "--by", "ana")
    assert rolled.exit_code == 0 and "v3 -> v1" in rolled.output
    with engine.connect() as conn:
        assert registry_sql.get_version(conn, "v3")["status"] == "rejected"
        # v2's shadow stage was judged against v3, which no longer serves: it ends, v2 is a candidate again
        assert registry_sql.get_version(conn, "v2")["status"] == "candidate"
        assert registry_sql.get_alias(conn, registry_sql.SHADOW_ALIAS) is None
    assert run("models", "shadow").exit_code == 1  # no shadow version


def test_every_option_has_help_text():
    from marketmood.commands.retrain import COMMANDS

    def walk(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    for top in COMMANDS:
        for command in walk(top):
            for param in command.params:
                if param.param_type_name == "option":
                    assert param.help, f"{command.name} {param.opts} has no help text"


def test_scheduler_once_runs_a_missed_scheduled_retrain_and_exits_1_when_it_fails(run, engine, tmp_path, monkeypatch):
    """`scheduler --once` from an outside cron (a Kubernetes CronJob): the fire time just passed is due, and a retrain
    that fails gives exit 1 like `marketmood retrain`. The failure is a cheap one, before any training: the champion's
    dev split used another row limit than the settings ask for."""
    registry.register_artifact(engine, _artifact(tmp_path, "champ"), extra_config={SPLIT_RECORD: {
        "seed": 13, "split_method": "cluster", "limit_per_dataset": 40, "dev_fingerprint": None}})
    registry.promote(engine, "champ", by="test")
    with engine.begin() as conn:  # registered before the fire time that just passed
        conn.execute(update(ModelVersion).values(created_at=datetime.now(UTC) - timedelta(hours=1)))
    insert_one = run("feedback", "import", str(_csv(tmp_path)), "--by", "ana")
    assert insert_one.exit_code == 0, insert_one.output
    monkeypatch.setenv("MARKETMOOD_RETRAIN__SCHEDULE", "* * * * *")
    monkeypatch.setenv("MARKETMOOD_RETRAIN__MIN_NEW_FEEDBACK", "1")
    monkeypatch.setenv("MARKETMOOD_RETRAIN__LIMIT_PER_DATASET", "30")
    get_settings.cache_clear()
    failed = run("scheduler", "--once")
    assert failed.exit_code == 1, failed.output
    assert "-> failed" in failed.output and "limit_per_dataset=30" in failed.output  # and why
    monkeypatch.setenv("MARKETMOOD_RETRAIN__SCHEDULE", "0 3 29 2 *")  # not due (but 03:00 of a Feb 29): exit 0
    get_settings.cache_clear()
    idle = run("scheduler", "--once")
    assert idle.exit_code == 0 and "not due" in idle.output, idle.output


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "one.csv"
    path.write_text("text,sentiment\nShares tumble after the profit warning,negative\n")
    return path
