"""``marketmood alerts`` commands against a real database."""

from __future__ import annotations

from datetime import timedelta

import click
import pytest
from click.testing import CliRunner

from alerts import lifecycle
from marketmood.cli import cli
from marketmood.commands.alerts import parse_duration
from marketmood.settings import get_settings
from storage import alerts as db
from storage.db import make_engine
from tests.alerts.factories import BASE


@pytest.fixture
def runner(db_url, monkeypatch):
    monkeypatch.setenv("MARKETMOOD_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_parse_duration() -> None:
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("90") == timedelta(minutes=90)
    for bad, message in (("0", "not a positive duration"), ("0h", "not a positive duration"),
                         ("99999999999d", "longer than a timedelta holds"), ("soon", "not a duration")):
        with pytest.raises(click.BadParameter, match=message):
            parse_duration(bad)


def test_bad_silence_durations_and_limits_are_usage_errors_before_the_database_starts(runner) -> None:
    """Exit code 2 (click's usage error) with the option named; a negative LIMIT used to reach PostgreSQL."""
    for args in (["alerts", "silence", "--topic", "Macro", "--for", "0"], ["alerts", "list", "--limit", "-1"],
                 ["alerts", "outbox", "--limit", "-1"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)


def test_list_ack_silence_unsilence(runner, db_url) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        alert = db.insert_alert(conn, rule="topic-negative-spike", scope_type="topic", scope="Macro",
                                severity="warning", state="firing", dedup_key="k", started_at=BASE,
                                evidence={"current_share": 0.55, "baseline_share": 0.2, "volume": 14})
        lifecycle.enqueue(conn, alert, ["pd"], "trigger")
    out = runner.invoke(cli, ["alerts", "list"])
    assert out.exit_code == 0, out.output
    assert "firing" in out.output and "topic:Macro" in out.output and "55% vs 20%" in out.output
    with engine.begin() as conn:  # a new event on top of it: the list says so, with the latest evidence
        db.update_alert(conn, alert["id"], evidence={**alert["evidence"], "escalations": [
            {"current_share": 0.9, "baseline_share": 0.5, "fired_at": "2024-01-02T09:15:00+00:00"}]})
    out = runner.invoke(cli, ["alerts", "list"])
    assert "escalated x1 (latest 90% vs 50% at 2024-01-02T09:15:00+00:00)" in out.output, out.output
    out = runner.invoke(cli, ["alerts", "ack", str(alert["id"]), "--by", "ann"])
    assert out.exit_code == 0 and "acknowledged" in out.output
    assert runner.invoke(cli, ["alerts", "ack", "9999"]).exit_code == 1
    out = runner.invoke(cli, ["alerts", "silence", "--topic", "energy | oil", "--for", "2h", "--reason", "known"])
    assert out.exit_code == 0 and "topic:Energy | Oil" in out.output
    assert "silence #" in runner.invoke(cli, ["alerts", "list"]).output
    assert runner.invoke(cli, ["alerts", "silence", "--topic", "Crypto"]).exit_code == 2
    assert runner.invoke(cli, ["alerts", "silence", "--ticker", "  "]).exit_code == 2
    out = runner.invoke(cli, ["alerts", "silence", "--ticker", " aapl "])  # spelled as stored, like /sentiment
    assert out.exit_code == 0 and "ticker:AAPL until" in out.output, out.output
    assert "cancelled 1 silence(s)" in runner.invoke(cli, ["alerts", "unsilence", "--ticker", "aapl"]).output
    out = runner.invoke(cli, ["alerts", "unsilence", "--topic", "Energy | Oil"])
    assert "cancelled 1 silence(s)" in out.output
    out = runner.invoke(cli, ["alerts", "outbox"])
    assert "acknowledge" in out.output and "pending" in out.output
    with engine.connect() as conn:
        assert db.get_alert(conn, alert["id"])["acknowledged_by"] == "ann"
        assert db.list_silences(conn) == []
    engine.dispose()


def test_alert_config_maps_settings(monkeypatch) -> None:
    from marketmood.commands.alerts import alert_config
    from marketmood.settings import ConfigError, load_settings

    monkeypatch.setenv("MARKETMOOD_ALERTS__ALLOWED_LATENESS_S", "90")
    monkeypatch.setenv("MARKETMOOD_ALERTS__RUNBOOK_URL", "https://runbooks.example.com/alerts")
    settings = load_settings()
    config = alert_config(settings)
    assert config.watermark_topic == settings.topics.raw and config.allowed_lateness_s == 90
    assert config.runbook_url == "https://runbooks.example.com/alerts" and config.grafana_url == settings.grafana.url
    assert config.plots_dir == settings.home / "alert-plots"
    monkeypatch.setenv("MARKETMOOD_ALERTS__USE_WATERMARK", "false")
    assert alert_config(load_settings()).watermark_topic is None
    monkeypatch.setenv("MARKETMOOD_ALERTS__CLAIM_TIMEOUT_S", "6")  # < 2 x the 5-s delivery timeout
    with pytest.raises(ConfigError, match="claim_timeout_s"):
        alert_config(load_settings())


def test_a_rule_whose_baseline_is_shorter_than_a_window_is_refused(runner, tmp_path) -> None:
    """Its baseline is always empty: the rule validated, ran, and could never fire."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: blind\n    scope: {type: topic}\n    detection: {baseline_hours: 0.05}\n")
    result = runner.invoke(cli, ["alerts", "check-rules", str(rules)])  # 180 s against the default 300-s window
    assert result.exit_code != 0  # a ConfigError: `marketmood` prints it as one line and exits 2
    assert "rule 'blind': baseline_hours 0.05 is shorter than one 300-second window" in str(result.exception)
    rules.write_text("rules:\n  - name: fine\n    scope: {type: topic}\n    detection: {baseline_hours: 1}\n")
    assert runner.invoke(cli, ["alerts", "check-rules", str(rules)]).exit_code == 0
